"""DSCVSR on Vid4 at several scales against MATLAB bicubic (and, at x4, a given reference figure).

    python bench/eval_dscvsr.py [--weights FILE] [--scales 2 2.5 3 4] [--label NAME] \
        ../shared/data/vid4_gt/city ../shared/data/vid4_gt/walk

LR = MATLAB ``imresize(gt, 1/r)`` (BI), the whole clip through the model at once, Y-PSNR on uint8 outputs with no
border crop (the region common to output and GT: at r = 2.5 the output can be one pixel larger). Prints a
markdown table and appends one JSON record per run to ``bench/results/dscvsr_vid4.jsonl`` (device, versions,
git sha, date, params, ms/frame -- CPU times are CPU times, said so).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import cpu_model, env_info  # noqa: E402
from vsr_engine import load_model  # noqa: E402
from vsr_engine.training.data import read_folder  # noqa: E402
from vsr_engine.training.evaluate import eval_clip  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "dscvsr_vid4.jsonl")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--weights", default=None, help="default: the bundled weights")
    ap.add_argument("--scales", nargs="+", type=float, default=[2.0, 2.5, 3.0, 4.0])
    ap.add_argument("--label", default="bundled")
    ap.add_argument("--frames", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model("dscvsr", weights=args.weights).to(args.device)
    n_all = sum(p.numel() for p in model.parameters())
    n_spy = sum(p.numel() for p in model.spynet.parameters())
    rec = {"label": args.label, "weights": model.weights_path, "params": n_all, "params_without_spynet": n_all - n_spy,
           **env_info(torch.device(args.device)), "results": []}
    if args.device == "cpu":
        rec["device"] = f"cpu ({cpu_model() or 'unknown'}, {torch.get_num_threads()} threads)"
    print(f"weights {model.weights_path}: {n_all:,} parameters ({n_all - n_spy:,} without BasicVSR's SPyNet)")
    print("| clip | scale | bicubic | DSCVSR | gain | ms/frame |")
    print("|---|---|---|---|---|---|")
    for clip in args.clips:
        gts = read_folder(clip)
        if args.frames:
            gts = gts[:args.frames]
        name = os.path.basename(os.path.normpath(clip))
        for r in args.scales:
            bic = float(np.mean(eval_clip(None, gts, scale=r)))
            t0 = time.perf_counter()
            ps = float(np.mean(eval_clip(model, gts, device=args.device, scale=r)))
            ms = 1000 * (time.perf_counter() - t0) / len(gts)  # includes LR making and PSNR (CPU, small share)
            rec["results"].append({"clip": name, "frames": len(gts), "scale": r, "bicubic": bic, "dscvsr": ps,
                                   "ms_per_frame": ms})
            print(f"| {name} | x{r:g} | {bic:.3f} | {ps:.3f} | {ps - bic:+.3f} | {ms:.0f} |", flush=True)
    if not args.no_save:
        os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
        with open(RESULTS, "a") as f:
            f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
