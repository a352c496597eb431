"""``vsr-engine batch INPUT... --out DIR``: many videos, or long ones in segments, on a Ray cluster.

Registered through ``vsr_engine.cli.OPTIONAL_SUBCOMMANDS``; takes the model and encoding options of ``upscale``.
"""
from __future__ import annotations

import argparse
import sys

__all__ = ["register", "cmd_batch"]


def _positive(v: str) -> float:
    try:
        x = float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {v!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {v})")
    return x


def _ray_or_error():
    try:
        import ray  # noqa: F401
    except ImportError:
        from ..video import VsrError
        raise VsrError("batch needs Ray, which is not installed: pip install 'vsr_engine[ray]' (or pip install ray)") \
            from None


def cmd_batch(args) -> int:
    from .job import BatchOptions, run_batch
    from .plan import DEFAULT_SEGMENT_FRAMES  # noqa: F401
    import os
    from ..video import VsrOutputError
    from .job import expand_inputs
    expand_inputs(args.inputs)          # cheap checks before choosing (and maybe loading) a model
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise VsrOutputError(f"{args.out}: exists and is not a folder")
    _ray_or_error()
    try:   # created (with its parents) as every other output path is
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        raise VsrOutputError(f"{args.out}: cannot create the output folder ({e.strerror or e})") from None
    if args.scale is not None and args.model == "auto":
        args.model = "dscvsr" if args.scale != 4 else "auto"
    model = args.model
    if model == "auto":
        # the choice must be the same on every worker: decide here from what this machine has
        from ..cli import _pick_model
        model = _pick_model(args)
    spec = {"model": model, "weights": args.weights, "variant": args.variant, "window": args.window,
            "overlap": args.overlap, "dtype": args.dtype, "device": args.device, "threads": args.threads or None}
    from ..scenecut import parse_scene_cuts
    if parse_scene_cuts(args.scene_cuts) is not None:   # segment borders at cuts, workers reset there
        spec["scene_cuts"] = parse_scene_cuts(args.scene_cuts)
    if args.scale is not None:
        spec["model_kwargs"] = {"scale": args.scale}
    enc = {"codec": args.codec, "crf": args.crf, "preset": args.preset, "pix_fmt": args.pix_fmt}
    ext = args.ext if args.ext.startswith(".") else "." + args.ext
    opts = BatchOptions(spec=spec, enc=enc, segments=args.segments, segment_frames=args.segment_frames,
                        context=args.context, workers=args.workers, retries=args.retries, address=args.address,
                        num_gpus=args.gpus_per_worker, num_cpus=args.cpus_per_worker, resume=args.resume,
                        force=args.force, ext=ext, quiet=args.quiet, segment_timeout=args.segment_timeout)
    try:
        s = run_batch(args.inputs, args.out, opts)
    except KeyboardInterrupt:
        print("vsr-engine: batch stopped; finished segments are kept next to the outputs (.NAME.vsrjob folders) -- "
              "rerun with --resume", file=sys.stderr, flush=True)
        raise
    fails = len(s["failures"])
    print(f"wrote {len(s['outputs'])} output(s), {s['frames']} frames in {s['seconds']:.1f} s "
          f"({s['segments']} segments, {s['segments_resumed']} from an earlier run, {fails} failed attempt(s) "
          f"retried, merge {s['merge_seconds']:.2f} s)")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    from ..cli import _scale_arg
    from ..engine import DEFAULT_OVERLAP, DEFAULT_WINDOW
    p = subparsers.add_parser(
        "batch", help="upscale many videos / long videos in segments on a Ray cluster (GPUs, machines)",
        description="Upscale every INPUT (video files or folders of videos) into --out DIR, one output each, on a "
                    "Ray cluster: long videos are split into frame ranges with context on each side, run on an "
                    "actor pool (one GPU per worker where GPUs exist), retried when a worker or node is lost, and "
                    "joined by stream copy with the source's audio and subtitles. Needs `pip install vsr_engine[ray]`.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files or folders of videos")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder, created with its parents when missing (one NAME.mp4 per input)")
    c = p.add_argument_group("cluster")
    c.add_argument("--address", default=None, help="Ray cluster address (e.g. 10.0.0.1:6379 or auto); default: a "
                                                   "local Ray instance on this machine")
    c.add_argument("--workers", type=int, default=None, help="workers (actors); default one per GPU, else 1")
    c.add_argument("--gpus-per-worker", type=float, default=None, help="default 1 when the cluster has GPUs, else 0")
    c.add_argument("--cpus-per-worker", type=float, default=1)
    c.add_argument("--retries", type=int, default=3, help="extra attempts per segment (default 3)")
    c.add_argument("--segment-timeout", type=_positive, default=None, metavar="S",
                   help="seconds without progress before a worker counts as hung, is killed and its segment retried "
                        "(default: 10 x the measured time per frame over the first window, at least 60 s; 600 s "
                        "until a segment has been timed)")
    s = p.add_argument_group("segments")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--segments", type=int, default=None, help="split every video into N segments")
    g.add_argument("--segment-frames", type=int, default=None, help="frames per segment (default 300)")
    s.add_argument("--context", type=int, default=None, help="context frames on each side (default: 2 x --overlap)")
    m = p.add_argument_group("model (as in upscale)")
    m.add_argument("--model", default="auto")
    m.add_argument("--scale", type=_scale_arg, default=None)
    m.add_argument("--variant", default=None)
    m.add_argument("--weights", default=None, help="checkpoint file (must exist at this path on every node)")
    m.add_argument("--device", default=None)
    m.add_argument("--dtype", default=None)
    m.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    m.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP)
    m.add_argument("--threads", type=int, default=0)
    m.add_argument("--scene-cuts", default="on", metavar="on|off|T",
                   help="scene cuts as clip boundaries; segment borders prefer them (default on)")
    e = p.add_argument_group("encoding (as in upscale)")
    e.add_argument("--codec", default="libx264")
    e.add_argument("--crf", type=float, default=18)
    e.add_argument("--preset", default="medium")
    e.add_argument("--pix-fmt", default=None, help="as in upscale (default: the input's bit depth kept)")
    e.add_argument("--ext", default=".mp4", help="output container by extension (default .mp4)")
    o = p.add_argument_group("output")
    o.add_argument("--force", action="store_true", help="replace existing outputs and unfinished jobs")
    o.add_argument("--resume", action="store_true", help="continue: skip verified segments and finished outputs")
    o.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=cmd_batch)
    return p
