"""Window/overlap accuracy of the streaming Engine against whole-sequence processing (not part of CI).

    python bench/bench_window.py                     # Vid4 walk, official BasicVSR Vimeo-BI, default pairs
    python bench/bench_window.py --pairs 16:8,32:8 --frames 20

The BI x4 LR of each ground-truth frame is made with the MATLAB-compatible bicubic; Y-PSNR as in
bench/eval_vid4.py (clamped, rounded, no crop). Prints a markdown table and writes JSON next to it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vsr_engine import load_model  # noqa: E402
from vsr_engine.training.data import bi_degrade, read_folder  # noqa: E402
from vsr_engine.engine import Engine  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=os.path.join(ROOT, "..", "shared", "data", "vid4_gt", "walk"))
    ap.add_argument("--model", default="basicvsr")
    ap.add_argument("--variant", default="vimeo-bi")
    ap.add_argument("--pairs", default="8:4,16:4,16:8,32:8,16:16",
                    help="window:overlap pairs (split mode); add b to a pair (16:8b) for black-box mode")
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "window_walk.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    gts = read_folder(args.clip)
    if args.frames:
        gts = gts[:args.frames]
    lrs = [bi_degrade(g, 4) for g in gts]
    model = load_model(args.model, variant=args.variant)
    print(f"{args.model} {args.variant} ({model.weights_path}); {len(gts)} frames, LR {lrs[0].shape[1]}x"
          f"{lrs[0].shape[0]}; torch threads {torch.get_num_threads()}", flush=True)
    rows = []
    t0 = time.time()
    x = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    with torch.inference_mode():
        y = model(x)[0]
    whole = [psnr_y(y[i], gts[i]) for i in range(len(gts))]
    del y
    base = float(np.mean(whole))
    rows.append({"window": "whole", "overlap": "-", "mode": "-", "psnr": base, "delta": 0.0, "max_frame_delta": 0.0,
                 "seconds": time.time() - t0})
    print(f"whole sequence: {base:.4f} dB ({rows[-1]['seconds']:.0f} s)", flush=True)
    for pair in args.pairs.split(","):
        mode = "blackbox" if pair.endswith("b") else "split"
        w, o = (int(v) for v in pair.rstrip("b").split(":"))
        eng = Engine(model, window=w, overlap=o, mode=mode)
        t0 = time.time()
        outs = list(eng.run(lrs))
        ps = [psnr_y(outs[i], gts[i]) for i in range(len(gts))]
        d = [p - q for p, q in zip(ps, whole)]
        rows.append({"window": w, "overlap": o, "mode": mode, "psnr": float(np.mean(ps)),
                     "delta": float(np.mean(ps)) - base, "max_frame_delta": float(min(d, key=lambda v: -abs(v))),
                     "seconds": time.time() - t0, "peak_rss_mib": eng.last_summary.peak_memory_bytes / 2 ** 20})
        r = rows[-1]
        print(f"window {w:3d} overlap {o:3d} {mode:8s}: {r['psnr']:.4f} dB  delta {r['delta']:+.4f}  "
              f"worst frame {r['max_frame_delta']:+.3f}  ({r['seconds']:.0f} s)", flush=True)
    print("\n| window | overlap | mode | Y-PSNR (dB) | delta vs whole (dB) | worst frame delta (dB) | time (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['window']} | {r['overlap']} | {r['mode']} | {r['psnr']:.4f} | {r['delta']:+.4f} | "
              f"{r['max_frame_delta']:+.3f} | {r['seconds']:.0f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"clip": os.path.basename(os.path.normpath(args.clip)), "model": args.model,
                   "variant": args.variant, "frames": len(gts), "rows": rows}, f, indent=1)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
