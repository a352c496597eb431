"""``vsr-engine stdo fit|upscale|info`` (registered by the main CLI through :func:`register`) and
``python -m vsr_engine.stdo ...`` (standalone, :func:`main`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence


def _grid(s: str):
    try:
        w, h = s.lower().split("x")
        return int(w), int(h)
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid must look like 10x5 (columns x rows), got {s!r}") from None


def _fractions(s: str):
    try:
        return [float(x) for x in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--joint-mix takes one fraction per chunk, comma-separated "
                                         f"(e.g. 1,0.75,0.5,0.25), got {s!r}") from None


def _arch(items):
    out = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"--arch expects key=value, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k] = int(v)
        except ValueError:
            out[k] = float(v)
    return out


def _add_fit(sp):
    p = sp.add_parser("fit", help="fit STDO/JSTDO models to an HR video and write a bundle",
                      description="Server side: HR video -> bundle (LR video + per-chunk models + chunk map).")
    p.add_argument("hr_video", help="HR video file or folder of frames")
    p.add_argument("bundle", help="output bundle file (e.g. clip.stdo)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=4)
    p.add_argument("--chunks", type=int, default=4, help="K: number of difficulty chunks (default 4)")
    p.add_argument("--joint", action="store_true", help="JSTDO: one model on the data-aware mix instead of K models")
    p.add_argument("--joint-mix", type=_fractions, default=None, metavar="F0,F1,...",
                   help="with --joint: the fraction of each chunk (hardest first) in the joint training set; "
                        "default the paper's mix 1-c/(K-1) (all of chunk 0, none of the easiest)")
    p.add_argument("--model", choices=("wdsr", "edsr"), default="wdsr")
    p.add_argument("--arch", nargs="*", metavar="KEY=VALUE",
                   help="override the paper config, e.g. num_blocks=4 num_residual_units=16 (WDSR) or num_feats=32")
    p.add_argument("--steps", type=int, default=2000, help="training steps per chunk model (or the joint model)")
    p.add_argument("--general-steps", type=int, default=None, help="steps of the general (labelling) model")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=32, help="LR training crop side (0 = whole cell windows)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-3 WDSR, 1e-4 EDSR)")
    p.add_argument("--init", choices=("general", "scratch"), default="general",
                   help="chunk models start from the general model (default) or from scratch (paper)")
    p.add_argument("--label", choices=("general", "bicubic"), default="general", help="difficulty label")
    p.add_argument("--grid", type=_grid, default=None, help="patch grid COLSxROWS (default: paper cell size)")
    p.add_argument("--margin", type=int, default=4, help="LR context pixels around each patch at upscale time")
    p.add_argument("--frames", type=int, default=0, help="use only N frames (0 = all)")
    p.add_argument("--start", type=int, default=0, help="first frame")
    p.add_argument("--hr-width", type=int, default=0, help="resize HR to this width first (MATLAB bicubic)")
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of a frame folder")
    p.add_argument("--lr-crf", type=int, default=10, help="x264 crf of the LR video (0 = lossless)")
    p.add_argument("--lr-pix-fmt", default="yuv420p")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = torch default)")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_safe(cmd_fit))


def _add_upscale(sp):
    p = sp.add_parser("upscale", help="upscale a bundle's LR video with its models (client side)",
                      description="Client side: bundle -> upscaled video (audio copied, timestamps kept), written "
                      "atomically through the engine's video I/O; an interrupted run continues with --resume.")
    p.add_argument("bundle")
    p.add_argument("output", help="output video (.mp4, .mkv, ...) or folder for PNG frames")
    p.add_argument("--device", default="auto")
    p.add_argument("--crf", type=float, default=18, help="crf of the output (default 18)")
    p.add_argument("--codec", default="libx264")
    p.add_argument("--preset", default="medium", help="encoder preset (default medium)")
    p.add_argument("--pix-fmt", default="yuv420p")
    p.add_argument("--force", action="store_true", help="overwrite an existing output (and discard a partial one)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its partial output")
    p.add_argument("--batch", type=int, default=1, help="frames per model call")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_safe(cmd_upscale))


def _add_info(sp):
    p = sp.add_parser("info", help="validate a bundle and print its manifest summary")
    p.add_argument("bundle")
    p.add_argument("--json", action="store_true", help="print the whole manifest")
    p.set_defaults(func=_safe(cmd_info))


def _safe(fn):
    """Handler wrapper: bad bundles / inputs end with one clear line and exit status 2, not a traceback."""
    def run(args) -> int:
        from ..video import VsrError
        from .bundle import BundleError
        try:
            return fn(args)
        except (BundleError, VsrError, FileNotFoundError, ValueError) as e:
            print(f"vsr-engine stdo: error: {e}", file=sys.stderr)
            return 2
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``stdo`` (with ``fit``, ``upscale``, ``info``) to a parent CLI's subparsers."""
    p = subparsers.add_parser("stdo", help="STDO per-video overfitting: fit a bundle, upscale a bundle",
                              description=__doc__.splitlines()[0])
    sp = p.add_subparsers(dest="stdo_cmd", metavar="{fit,upscale,info}")
    sp.required = True
    _add_fit(sp)
    _add_upscale(sp)
    _add_info(sp)
    return p


def _threads(n):
    if n:
        import torch
        torch.set_num_threads(int(n))


def _progress(quiet):
    if quiet:
        return None
    return lambda m: print(f"[stdo] {m}", file=sys.stderr, flush=True)


def cmd_fit(args) -> int:
    from ..video import check_output_path
    from .api import fit_video
    from .fit import FitConfig
    # the bundle's place is checked before hours of fitting (folder exists and is writable, not the input,
    # no existing file unless --force); the file itself is written atomically at the end
    if args.joint_mix is not None and not args.joint:
        raise ValueError("--joint-mix needs --joint")
    cfg = FitConfig(scale=args.scale, chunks=args.chunks, joint=args.joint, model=args.model, arch=_arch(args.arch),
                    steps=args.steps, general_steps=args.general_steps, batch=args.batch, crop=args.crop, lr=args.lr,
                    init=args.init, label=args.label, margin=args.margin, grid=args.grid, seed=args.seed,
                    joint_fractions=args.joint_mix,
                    device=args.device, lr_crf=args.lr_crf, lr_pix_fmt=args.lr_pix_fmt).check()
    check_output_path(args.bundle, inputs=[args.hr_video], force=args.force)
    _threads(args.threads)
    res = fit_video(args.hr_video, cfg, start=args.start, frames=args.frames, hr_width=args.hr_width, fps=args.fps,
                    progress=_progress(args.quiet))
    n = res.bundle.save(args.bundle)
    sizes = res.bundle.sizes()
    print(f"wrote {args.bundle}: {n} bytes (LR video {sizes['lr_video']}, models {sizes['models']}, "
          f"chunk map {sizes['chunk_map']}); {res.timings['total']:.1f} s")
    return 0


def cmd_upscale(args) -> int:
    from .upscale import upscale_bundle
    _threads(args.threads)
    st = upscale_bundle(args.bundle, args.output, device=args.device, codec=args.codec, crf=args.crf,
                        preset=args.preset, pix_fmt=args.pix_fmt, batch=args.batch, progress=_progress(args.quiet),
                        force=args.force, resume=args.resume)
    resumed = f" (resumed after frame {st['resumed_from']})" if st["resumed_from"] else ""
    print(f"wrote {args.output}: {st['frames']} frames{resumed}, {st['fps_model']:.2f} fps (models), "
          f"{st['fps']:.2f} fps end-to-end on {st['device']}")
    return 0


def cmd_info(args) -> int:
    from .bundle import Bundle
    b = Bundle.load(args.bundle)
    man = b.manifest
    if args.json:
        print(json.dumps(man, indent=1, sort_keys=True))
        return 0
    g = man["grid"]
    sizes = b.sizes()
    print(f"{args.bundle}: STDO bundle OK ({sizes['total']} bytes)")
    print(f"  x{man['scale']}  {man['frames']} frames  LR {g['lr_w']}x{g['lr_h']} -> HR {g['hr_w']}x{g['hr_h']}  "
          f"fps {man['fps']}")
    print(f"  grid {g['gw']}x{g['gh']} (cells <= {g['cell_w_max']}x{g['cell_h_max']} LR), margin {g['margin']}")
    print(f"  {'JSTDO' if man['joint'] else 'STDO'}: {man['chunks']} chunks, {len(b.models)} x {man['arch']['name']} "
          f"{man['arch']['config']}")
    if man["joint"]:
        fr = (man.get("fit") or {}).get("joint_fractions")
        print(f"  joint mix (fraction of each chunk, hardest first): "
              f"{'paper (1 - c/(K-1))' if fr is None else ','.join(f'{x:g}' for x in fr)}")
    print(f"  bytes: LR video {sizes['lr_video']}, models {sizes['models']}, chunk map {sizes['chunk_map']}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.stdo", description=__doc__.splitlines()[0])
    sp = ap.add_subparsers(dest="stdo_cmd", metavar="{fit,upscale,info}")
    sp.required = True
    _add_fit(sp)
    _add_upscale(sp)
    _add_info(sp)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        out = getattr(args, "output", None)
        msg = "python -m vsr_engine.stdo: interrupted"
        if out is not None:
            from ..video import partial_dir_for
            pd = partial_dir_for(os.path.abspath(out))
            msg += f"; nothing was written to {out}" + (
                f"; finished frames are kept in {pd} -- rerun with --resume" if os.path.isdir(pd) else "")
        print(msg, file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
