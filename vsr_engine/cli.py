"""The ``vsr-engine`` command.

    vsr-engine upscale INPUT OUTPUT [--model] [--weights] [--device] [--dtype] [--window] [--overlap]
                                    [--codec] [--crf] [--preset] [--pix-fmt] [--force] [--resume]
    vsr-engine models        models, variants, where each one's weights would come from now
    vsr-engine info          versions, device, which kernels / compiled parts are active and why not
    vsr-engine eval CLIP...  Y-PSNR on ground-truth frame folders (Vid4 protocol)

Errors in the input or output end with one line on stderr and a non-zero exit status (2), no traceback unless
``--debug``. Exit status 3: the output was written but the input was damaged or truncated (what decoded was
upscaled; the warning says how much). 130: interrupted (the partial output is kept for ``--resume``).
Other modules add subcommands through ``register(subparsers)`` (see ``OPTIONAL_SUBCOMMANDS``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
from typing import Optional, Sequence

PROG = "vsr-engine"
# modules that may add subcommands: each is imported if present and its register(subparsers) is called
OPTIONAL_SUBCOMMANDS = ("vsr_engine.stdo.cli", "vsr_engine.training.cli", "vsr_engine.distributed.cli",
                        "vsr_engine.compare")
EXIT_ERROR, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 2, 3, 130
EXIT_SIGPIPE = 141   # 128 + SIGPIPE: what a shell reports for a program ended by a closed pipe
_optional_status: dict = {}


def _user_errors():
    """Exception classes whose message is a complete user-facing explanation."""
    from .checkpoint import CheckpointError
    from .models import UnknownModelError
    from .video import VsrError
    from .weights import WeightsError
    return (VsrError, CheckpointError, WeightsError, UnknownModelError)


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader has exited (writing to it raises BrokenPipeError)."""
    try:
        import select
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError, ImportError):
        return False


def _eprint(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# upscale
# ---------------------------------------------------------------------------------------------------------------
class _Progress:
    """frames done / total, fps, ETA on one stderr line (a new line every few seconds when not a terminal)."""

    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.first = None
        self.last = 0.0
        self.shown = False

    def __call__(self, done: int, total: Optional[int], elapsed: float):
        if self.quiet:
            return
        if self.first is None:
            self.first = (done - 1, elapsed * 0)  # frames done before this run (resume), start time
        now = time.perf_counter()
        final = total is not None and done >= total
        if not final and now - self.last < (0.25 if self.tty else 5.0):
            return
        self.last = now
        n = done - self.first[0]
        fps = n / elapsed if elapsed > 0 else 0.0
        tot = f"/{total}" if total else ""
        pct = f" {100.0 * done / total:5.1f}%" if total else ""
        eta = ""
        if total and fps > 0:
            rest = max(0, total - done) / fps
            eta = f"  ETA {int(rest // 60)}:{int(rest % 60):02d}"
        bar = ""
        if total:
            k = int(24 * min(1.0, done / total))
            bar = " [" + "#" * k + "." * (24 - k) + "]"
        line = f"{done}{tot} frames{pct}{bar}  {fps:.2f} fps{eta}"
        if self.tty:
            self.stream.write("\r" + line + "   ")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def end(self):
        if self.shown and self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def _pick_model(args) -> str:
    """--model auto: RealBasicVSR when its weights are at hand (or given), else official BasicVSR."""
    if args.model != "auto":
        return args.model
    if getattr(args, "scale", None) is not None and args.scale != 4:   # issue 16: the best measured for r
        from .models.choice import choose
        name, variant, why = choose(args.scale)
        if variant and not args.variant:
            args.variant = variant
        if not args.quiet:
            _eprint(f"model: {name}" + (f" ({variant})" if variant else "") + f" for x{args.scale:g} -- {why}")
        return name
    if args.weights:
        from .checkpoint import guess_model, prepare_state_dict
        found = guess_model(prepare_state_dict(args.weights)[0])
        if not found:
            from .checkpoint import CheckpointError
            raise CheckpointError(f"{args.weights}: cannot tell which model these weights are for; pass --model")
        return found
    from . import weights as W
    kind, loc = W.where("realbasicvsr", None)
    if kind in ("cache", "package"):
        return "realbasicvsr"
    if not args.quiet:
        _eprint("model: basicvsr (official weights, offline) -- RealBasicVSR weights are not on this machine; "
                "`vsr-engine models` says where they would come from, or pass --model realbasicvsr / --weights")
    return "basicvsr"


def cmd_upscale(args) -> int:
    from .engine import Engine, resolve_device, resolve_dtype
    from .video import VsrOutputError, check_output_path, check_stream_copy, check_video_options, open_source
    inp, outp = args.input, args.output
    if args.force and args.resume:
        raise VsrOutputError("--force starts over and --resume continues; pass only one")
    # cheap checks first: output path, input readable, device -- before loading any model
    is_folder = outp.endswith(os.sep) or os.path.isdir(outp) or not os.path.splitext(outp)[1]
    check_output_path(outp, inputs=[inp], force=args.force, resume=args.resume, is_folder=is_folder)
    if not is_folder:
        check_video_options(outp, args.codec, args.pix_fmt)
    src = open_source(inp, fps=args.fps)
    info = src.info
    src.close()
    if not is_folder and info.kind == "video":
        check_stream_copy(inp, check_video_options(outp, args.codec, args.pix_fmt), args.codec)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    model = _pick_model(args)
    extra = {}
    if args.scale is not None:
        from .models import check_scale
        from .video import VsrInputError
        try:
            check_scale(model, args.scale)
        except ValueError as e:
            raise VsrInputError(str(e)) from None
        extra["scale"] = args.scale
    if model == "tdan" and getattr(args, "tdan_edge", None):
        extra["edge"] = args.tdan_edge
    if not is_folder and info.width and info.height:
        from .ops.meta_upscale import meta_out_size
        from .io.encode import default_pix_fmt
        from .video import check_output_size
        r = args.scale if args.scale is not None else 4.0
        oh, ow = meta_out_size(info.height, info.width, r)
        check_output_size(args.pix_fmt or default_pix_fmt(args.codec, info.bit_depth), ow, oh)
    engine = Engine(model, weights=args.weights, device=device, dtype="auto" if args.dtype == "auto" else dtype,
                    window=args.window,
                    overlap=args.overlap, variant=args.variant, tile=args.tile, memory_limit=args.memory_limit,
                    scene_cuts=getattr(args, "scene_cuts", None), **extra)
    if not args.quiet:
        w = engine.weights_path
        _eprint(f"input: {inp}: {info.describe()}")
        _eprint(f"model: {engine.model_name}" + (f" ({args.variant})" if args.variant else "")
                + (f", weights {w}" if w else "")
                + (f" ({engine.model.weights_layout})" if w and getattr(engine.model, "weights_layout", "") else "")
                + f"; {device}, {str(dtype).replace('torch.', '')}, window "
                f"{engine.window}, overlap {engine.overlap}")
        _eprint(f"plan: {engine.plan()}")
    if not is_folder and info.hdr:
        from .io.encode import hdr_encoder_options
        hdr_warn = hdr_encoder_options(args.codec, info.hdr)[1]
        if hdr_warn:
            _eprint(f"{PROG}: warning: {hdr_warn}")
    prog = _Progress(quiet=args.quiet)
    try:
        summary = engine.run(inp, outp, resume=args.resume, force=args.force, fps=args.fps, progress=prog,
                             **_encoding(args))
    finally:
        prog.end()
    for wmsg in summary.warnings:
        _eprint(f"{PROG}: warning: {wmsg}")
    print(f"wrote {summary.output}: {summary.line()}")
    return 0 if summary.complete else EXIT_INCOMPLETE


def _encoding(args) -> dict:
    """Encoder keyword arguments for Engine.run from the encoding flags."""
    crf, options = args.crf, {}
    preset = args.preset or ("ultrafast" if args.lossless else "medium")
    if args.lossless:
        crf, options = None, {"qp": "0"}
    return {"codec": args.codec, "crf": crf, "preset": preset, "pix_fmt": args.pix_fmt, "options": options or None,
            "encoder_threads": args.encoder_threads or None}


def _scale_arg(text: str) -> float:
    from .models.resample import check_any_scale
    try:
        return check_any_scale(text, "--scale")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_upscale(sp, common):
    from .engine import DEFAULT_OVERLAP, DEFAULT_WINDOW
    p = sp.add_parser("upscale", parents=[common], help="upscale a video (or image folder), x4 or --scale",
                      description="Upscale INPUT (video file or image folder) into OUTPUT (video file, or a folder "
                                  "for PNG frames). Audio and subtitles are copied, timestamps and colour tags kept.")
    p.add_argument("input", help="video file or folder of images")
    p.add_argument("output", help="output video (.mp4, .mkv, ...) or folder for PNG frames")
    g = p.add_argument_group("model")
    g.add_argument("--model", default="auto",
                   help="model name (see `vsr-engine models`); auto: realbasicvsr when its weights are here, "
                        "else basicvsr")
    g.add_argument("--scale", type=_scale_arg, default=None,
                   help="output scale, any r in [1, 16] for every model (output floor(r*W) x floor(r*H); x4 models "
                        "resample their x4 output); auto picks the model measured best for r (`vsr-engine models`)")
    g.add_argument("--variant", default=None, help="official weights variant (e.g. reds4, vimeo-bi, vimeo-bd)")
    g.add_argument("--weights", default=None, help="checkpoint file (BasicSR, mmagic or safetensors)")
    g.add_argument("--tdan-edge", default=None, choices=["reflection", "official"],
                   help="TDAN's frames beyond the clip ends: reflection (mmagic, default) or official (its eval.py)")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--dtype", default="auto", help="auto, fp32, fp16, bf16 (default auto: fp16 on CUDA; on a CPU "
                   "its plan -- bf16 with fp32 islands where the CPU has bf16 hardware, else fp32 -- on the fast "
                   "step; fp32 is the exact fp32 path)")
    g.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"frames per window at most (default {DEFAULT_WINDOW}); a smaller one is used when the frames "
                        "would not fit in free memory")
    g.add_argument("--tile", type=int, default=None,
                   help="process each frame in tiles of about N x N input pixels (default: only when a frame would "
                        "not fit in free memory; 0 = never)")
    g.add_argument("--memory-limit", default=None,
                   help="use at most this much memory for the frames in flight, e.g. 6G (default: what is free)")
    g.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP,
                   help=f"context frames beyond each window (default {DEFAULT_OVERLAP})")
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    g.add_argument("--scene-cuts", default="on", metavar="on|off|T",
                   help="treat scene cuts (found on the input frames) as clip boundaries: recurrent state is reset and "
                        "no window crosses them (default on; T = histogram threshold in (0, 1], default 0.2)")
    e = p.add_argument_group("encoding")
    e.add_argument("--codec", default="libx264", help="video encoder (default libx264)")
    e.add_argument("--crf", type=float, default=18, help="constant rate factor (default 18)")
    e.add_argument("--preset", default=None,
                   help="encoder preset (default medium; at 4K the encoder is the bottleneck: see README "
                        "'Host-side budget' for the cores each preset needs)")
    e.add_argument("--encoder-threads", type=int, default=0,
                   help="encoder threads (default 0: the encoder's own choice, about 1.5 x cores for libx264)")
    e.add_argument("--lossless", action="store_true",
                   help="libx264 lossless (qp 0, preset ultrafast unless --preset): the fastest libx264 mode, "
                        "large files, for an intermediate to re-encode later")
    e.add_argument("--pix-fmt", default=None,
                   help="pixel format (default: the input's bit depth kept -- yuv420p10le for 10-bit and deeper "
                        "input, yuv420p otherwise; HDR10 metadata is kept with libx264/libx265)")
    e.add_argument("--fps", type=float, default=None, help="frame rate of an image-folder input (default 25)")
    o = p.add_argument_group("output")
    o.add_argument("--force", action="store_true", help="overwrite an existing output (and discard a partial one)")
    o.add_argument("--resume", action="store_true", help="continue an interrupted run from its partial output")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress or notes")
    p.set_defaults(func=cmd_upscale)


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
_MODEL_NOTES = {
    "basicvsr": "BasicVSR (CVPR 2021), x4 (other --scale: its x4 output resampled): bidirectional recurrent propagation with SPyNet flow; for clean or "
                "bicubic-downscaled video",
    "realbasicvsr": "RealBasicVSR (CVPR 2022), x4: an image-cleaning stage before BasicVSR; for real-world "
                    "(noisy, compressed) video. `upscale --model auto` picks it when its weights are here",
    "basicvsr-meta": "official BasicVSR (Vimeo-BI, frozen) + a Meta-SR scale head trained here, any scale "
                     "(--scale); x4 + resize plus a learned residual, official BasicVSR at x4",
    "dscvsr": "DSCVSR (KSEM 2024), any scale 1.1-4 (--scale): depthwise-separable dense blocks, meta-upscale; "
              "weights trained by this project (see README)",
    "duf": "DUF (CVPR 2018), x2/x3/x4 (other --scale: resampled): 7-frame 3-D dense net predicting per-pixel 5x5 "
           "upsampling filters + a residual; BD (Gaussian-blur) video. `--model duf-16l` / duf-28l / duf-52l; "
           "official params_*.h5 (needs h5py) or, for 16L x4, weights trained here on a CPU",
    "tdan": "TDAN (CVPR 2020), x4 (other --scale: resampled): 5-frame sliding window, deformable-conv alignment; "
            "official/mmagic checkpoints when present, else weights trained by this project (--tdan-edge)",
    "usrda": "USR-DA (ICCV 2021) SR path, x4, frame by frame: a small model adapted to your own footage by "
             "`vsr-engine adapt` (docs/training.md); pass --weights FILE",
}


def cmd_models(args) -> int:
    from . import weights as W
    from .models import MODELS, model_names
    for name in model_names():
        cls = MODELS[name][0]
        doc = _MODEL_NOTES.get(name) or ((cls.__doc__ or "").strip().splitlines() or [cls.__name__])[0]
        print(f"{name}: {doc}")
        if name not in W.KNOWN:
            print("    no official weights are known: pass --weights FILE")
            continue
        for variant, spec in W.KNOWN[name].items():
            kind, loc = W.where(name, variant)
            default = " (default)" if variant == W.default_variant(name) else ""
            if kind == "download":
                offline = os.environ.get("VSR_ENGINE_OFFLINE", "") not in ("", "0")
                where = f"download {loc}" + (" -- not available: VSR_ENGINE_OFFLINE is set" if offline else "")
            elif kind == "none":
                where = "not available"
            else:
                where = f"{kind} {loc}"
            print(f"    {variant}{default}: {spec.note}")
            print(f"        weights now from: {where}")
    print(f"cache folder: {W.cache_dir()}")
    from .models.choice import describe
    print(describe())
    return 0


# ---------------------------------------------------------------------------------------------------------------
# info
# ---------------------------------------------------------------------------------------------------------------
def _try_import(name: str):
    try:
        return importlib.import_module(name), None
    except Exception as e:  # ImportError, OSError from a bad .so, ...
        return None, f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"


def cmd_info(args) -> int:
    import platform

    import torch
    from . import __version__
    print(f"vsr_engine {__version__}  python {platform.python_version()}  ({sys.executable})")
    print(f"torch {torch.__version__}  (CUDA build: {torch.version.cuda or 'none'}, threads {torch.get_num_threads()})")
    triton, why = _try_import("triton")
    print(f"triton {getattr(triton, '__version__', '?')}" if triton else f"triton: not importable ({why})")
    av, why = _try_import("av")
    if av:
        ff = getattr(av, "ffmpeg_version_info", "?")
        print(f"PyAV {av.__version__}  FFmpeg {ff}  libx264: {'yes' if 'libx264' in av.codecs_available else 'no'}")
    else:
        print(f"PyAV: not importable ({why}) -- video files cannot be read or written")
    from .cpu_plan import describe
    print(describe() + "  (what --dtype auto runs on a CPU)")
    from .host_threads import plan as host_plan
    print(host_plan(torch.device("cpu")).describe() + "  (a CPU run; --encoder-threads overrides)")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        for i in range(n):
            p = torch.cuda.get_device_properties(i)
            print(f"CUDA device {i}: {p.name}, {p.total_memory / 2 ** 30:.1f} GiB, sm_{p.major}{p.minor}")
        print(f"default device: cuda:0 (CUDA runtime {torch.version.cuda})")
    else:
        why_not = "this torch has no CUDA support" if not torch.version.cuda else "no CUDA device/driver found"
        print(f"CUDA: not available ({why_not}); default device: cpu")
    print(f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '')!r}  "
          f"VSR_ENGINE_BACKEND={os.environ.get('VSR_ENGINE_BACKEND', '')!r}")
    print("kernels (vsr_engine.ops):")
    from . import ops
    fmt = getattr(ops, "format_backend_info", None)
    binfo = getattr(ops, "backend_info", None)
    if binfo is not None:
        try:
            info = binfo()
            print(fmt(info) if fmt is not None else "\n".join(f"  {k}: {v}" for k, v in info.items()))
        except Exception as e:
            print(f"  backend_info() failed: {type(e).__name__}: {e}")
    else:
        print("  only the torch reference ops are active (vsr_engine.ops has no backend_info())")
    print("compiled parts:")
    c_mod, why = _try_import("vsr_engine._C")
    print(f"  vsr_engine._C (CUDA kernels): {'importable' if c_mod else 'not importable'}"
          + ("" if c_mod else f" ({why})"))
    h_mod, why = _try_import("vsr_engine._host")
    if h_mod is None:
        print(f"  vsr_engine._host (C++ host pipeline): not importable ({why})")
    else:
        line = "  vsr_engine._host (host staging for the GPU pipeline): importable"
        if hasattr(h_mod, "status"):
            try:
                st = h_mod.status(load=False)      # never builds anything
                line += f"; C++ backend active: {st.get('active')} ({st.get('reason')})"
            except Exception as e:  # pragma: no cover
                line += f"; status() failed: {type(e).__name__}: {e}"
        print(line)
    for name, status in _optional_status.items():
        print(f"  subcommands from {name}: {status}")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# eval
# ---------------------------------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from .training.evaluate import run
    run(args)
    return 0


def _add_eval(sp, common):
    from .training.evaluate import add_arguments
    p = sp.add_parser("eval", parents=[common], help="Y-PSNR on ground-truth frame folders (Vid4 protocol)",
                      description="Y-PSNR of a model on Vid4-style ground-truth folders (BI x4 LR made with the "
                                  "MATLAB-compatible bicubic; whole sequence, or --window to stream).")
    add_arguments(p)
    p.set_defaults(func=cmd_eval)


# ---------------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")
    ap = argparse.ArgumentParser(prog=PROG, description="Video super-resolution: upscale videos x4 with BasicVSR "
                                 "/ RealBasicVSR, streaming, with audio, timestamps and colour kept.")
    ap.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    ap.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sp = ap.add_subparsers(dest="command", metavar="COMMAND")
    sp.required = True
    _add_upscale(sp, common)
    p = sp.add_parser("models", parents=[common], help="models, variants and where their weights come from")
    p.set_defaults(func=cmd_models)
    p = sp.add_parser("info", parents=[common], help="versions, device, active kernels and compiled parts")
    p.set_defaults(func=cmd_info)
    _add_eval(sp, common)
    for name in OPTIONAL_SUBCOMMANDS:
        try:
            mod = importlib.import_module(name)
        except ImportError as e:
            if getattr(e, "name", None) not in (name, name.rsplit(".", 1)[0]):
                _optional_status[name] = f"not loaded ({type(e).__name__}: {e})"
            continue
        except Exception as e:  # a broken optional module must not break the main command
            _optional_status[name] = f"not loaded ({type(e).__name__}: {e})"
            continue
        reg = getattr(mod, "register", None)
        if callable(reg):
            try:
                reg(sp)
                _optional_status[name] = "registered"
            except Exception as e:
                _optional_status[name] = f"register() failed ({type(e).__name__}: {e})"
    return ap


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        ap = build_parser()
        args = ap.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors (2), --help/--version (0)
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_ERROR
    debug = bool(getattr(args, "debug", False)) or debug
    old = None
    try:
        old = signal.signal(signal.SIGTERM, _sigterm)
    except (ValueError, OSError):  # not the main thread
        pass
    try:
        rc = args.func(args)
        return int(rc or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        out = getattr(args, "output", None)
        msg = f"{PROG}: interrupted"
        if out is not None:
            from .video import partial_dir_for
            pd = partial_dir_for(os.path.abspath(out))
            if os.path.isdir(pd):
                msg += f"; nothing was written to {out}; finished windows are kept in {pd} -- rerun with --resume"
            else:
                msg += f"; nothing was written to {out}"
        _eprint(msg)
        return EXIT_INTERRUPTED
    except _user_errors() as e:
        if debug:
            raise
        _eprint(f"{PROG}: error: {_cli_text(_one_line(e))}")
        return EXIT_ERROR
    except MemoryError:
        if debug:
            raise
        _eprint(f"{PROG}: error: out of memory; try a smaller --window")
        return EXIT_ERROR
    except OSError as e:
        if isinstance(e, BrokenPipeError) and _stdout_closed():
            # The reader of our standard output went away (`vsr-engine info | head`): stop quietly, as a program
            # ended by SIGPIPE would, and keep Python from printing a second error at exit.
            try:
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            return EXIT_SIGPIPE
        if debug:
            raise
        _eprint(f"{PROG}: error: {_one_line(e)}")
        return EXIT_ERROR
    except Exception as e:
        if debug:
            raise
        msg = _one_line(e)
        if _is_out_of_memory(msg):
            _eprint(f"{PROG}: error: out of memory ({_oom_what(msg)}); try a smaller --window, --dtype fp16 on a "
                    "GPU, or a smaller input")
            return EXIT_ERROR
        else:
            _eprint(f"{PROG}: internal error: {type(e).__name__}: {msg} (run with --debug for the traceback)")
        return 1
    finally:
        if old is not None:
            try:
                signal.signal(signal.SIGTERM, old)
            except (ValueError, OSError):  # pragma: no cover
                pass


_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory", "defaultcpuallocator",
                "failed to allocate", "std::bad_alloc", "outofmemoryerror")


def _is_out_of_memory(msg: str) -> bool:
    """An allocator failure of torch (CPU or CUDA), numpy or C++, whatever its wording."""
    m = msg.lower()
    return any(k in m for k in _OOM_MARKERS)


def _oom_what(msg: str) -> str:
    """The useful part of an allocator message: how much it tried to allocate."""
    import re
    m = re.search(r"(?:allocate|allocating)\s+([0-9.]+\s*[KMGT]?i?B|([0-9]+) bytes)", msg)
    if not m:
        return msg[:100]
    size = f"{int(m.group(2)) / 2 ** 30:.1f} GiB" if m.group(2) else m.group(1)
    return f"could not allocate {size}"


def _cli_text(msg: str) -> str:
    """Error text for the command line: name the command's flags only (``--force``), not the API keyword that
    API errors add beside them (``--force (force=True)`` -> ``--force``)."""
    import re
    return re.sub(r"(--[a-z][\w-]*) \(\w+=[^()]*\)", r"\1", msg)


def _one_line(e: BaseException) -> str:
    s = str(e).strip()
    if isinstance(e, OSError) and e.strerror:
        s = f"{e.filename + ': ' if e.filename else ''}{e.strerror}"
    return " ".join(s.split()) if s else type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
