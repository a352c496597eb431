"""Y-PSNR of a model on Vid4-style ground-truth folders (BI x4 LR made with the MATLAB-compatible bicubic).

    python bench/eval_vid4.py --model basicvsr --variant vimeo-bi ../shared/data/vid4_gt/city ../shared/data/vid4_gt/walk

Each clip goes through the model as one whole sequence; PSNR is the mean over frames of the Y-channel PSNR
(outputs clamped and rounded to uint8, no border crop). ``--frames`` / ``--crop`` evaluate a part only.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vsr_engine import load_model  # noqa: E402
from vsr_engine.data import bi_degrade, read_folder  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402


def eval_clip(model, gts, device="cpu", dtype=torch.float32):
    lrs = [bi_degrade(g, 4) for g in gts]
    x = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float().div(255.0).unsqueeze(0)
    with torch.inference_mode():
        y = model(x.to(device, dtype)).float().cpu()[0]
    return [psnr_y(y[i], gts[i]) for i in range(len(gts))]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", help="folders of ground-truth frames")
    ap.add_argument("--model", default="basicvsr")
    ap.add_argument("--variant", default="vimeo-bi")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--frames", type=int, default=0, help="use only the first N frames (0 = all)")
    ap.add_argument("--crop", type=int, default=0, help="centre-crop GT to this size (multiple of 4; 0 = none)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    model = load_model(args.model, weights=args.weights, variant=args.variant).to(args.device)
    print(f"model {args.model} weights {model.weights_path} ({model.weights_layout}) device {args.device}")
    means = []
    for clip in args.clips:
        gts = read_folder(clip)
        if args.frames:
            gts = gts[:args.frames]
        if args.crop:
            h, w = gts[0].shape[:2]
            c = args.crop
            gts = [g[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c] for g in gts]
        t0 = time.time()
        ps = eval_clip(model, gts, args.device)
        means.append(float(np.mean(ps)))
        print(f"{os.path.basename(os.path.normpath(clip)):>10s}: {means[-1]:.3f} dB  ({len(gts)} frames "
              f"{gts[0].shape[1]}x{gts[0].shape[0]}, {time.time() - t0:.1f} s)")
    print(f"{'mean':>10s}: {np.mean(means):.3f} dB")


if __name__ == "__main__":
    main()
