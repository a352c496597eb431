"""Distributed batch (vsr_engine.distributed): seam check, job overhead and merge time (CPU; not part of CI).

    python bench/bench_distributed.py seam        # Vid4 walk, official BasicVSR Vimeo-BI: segments of 10 frames
                                                  # (context = the engine's overlap) vs one process, Y-PSNR
    python bench/bench_distributed.py overhead    # a few hundred small frames: `batch` on a local Ray instance
                                                  # vs the single-process Engine in the same session

Results go to bench/results/distributed_seam.json and bench/results/distributed_overhead.json.
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

from vsr_engine.data import bi_degrade, read_folder  # noqa: E402
from vsr_engine.distributed.plan import plan_segments  # noqa: E402
from vsr_engine.distributed.worker import build_engine, upscale_range  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402


def _machine() -> str:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.node()}: {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


def seam(args):
    gts = read_folder(args.clip)
    if args.frames:
        gts = gts[:args.frames]
    lrs = [bi_degrade(g, 4) for g in gts]
    spec = {"model": "basicvsr", "variant": args.variant, "window": args.window, "overlap": args.overlap}
    eng = build_engine(spec)
    ctx = args.context if args.context is not None else eng.overlap
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
    _write(args.out or os.path.join(ROOT, "bench", "results", "distributed_seam.json"), res)


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
    s.add_argument("--context", type=int, default=None, help="context frames each side (default: the overlap)")
    s.add_argument("--window", type=int, default=32)
    s.add_argument("--overlap", type=int, default=8)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", default=None)
    o = sub.add_parser("overhead")
    o.add_argument("--frames", type=int, default=240)
    o.add_argument("--size", default="64x36")
    o.add_argument("--segments", type=int, default=4)
    o.add_argument("--workers", type=int, default=2)
    o.add_argument("--threads", type=int, default=1)
    o.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.what == "seam":
        seam(args)
    else:
        overhead(args)


def overhead(args):
    raise SystemExit("overhead: not written yet")


if __name__ == "__main__":
    main()
