"""DUF on whole Vid4 city and walk, BD x4 as the official test.py ('G' inputs), scored by a transcription of the
official ``AVG_PSNR`` (Y of BT.601 'studio' YCbCr on uint8, 8-pixel border and 2 frames at each end dropped, mean of
per-frame PSNR), beside MATLAB-bicubic x4 of the same LR and the official DUF-16L result frames shipped in
github yhjo09/VSR-DUF (results/16L/G/<seq>/FrameNNN.png, read from a git mirror with ``git show``).

    python bench/eval_duf_vid4.py [--weights W] [--mirror /work/.mirror/yhjo09+VSR-DUF/repo] [--out JSON]

LR: utils.DownSample exactly (13x13 Gaussian sigma 1.6, reflect borders, every 4th pixel), float, not rounded
(test.py feeds the float LR to the network). Every prediction goes through uint8 as test.py saves its PNGs
(np.around) before scoring, so all three columns are scored from the same kind of image.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vsr_engine import load_model  # noqa: E402
from vsr_engine.training.data import read_folder  # noqa: E402
from vsr_engine.imresize import imresize_torch  # noqa: E402
from vsr_engine.training.duf import bd_degrade  # noqa: E402

T = np.array([[0.256788235294118, 0.504129411764706, 0.097905882352941]])


def y_of(img_u8: np.ndarray) -> np.ndarray:
    """utils._rgb2ycbcr(to_uint8(x), 255)[:, :, 0] for an image already in uint8."""
    return img_u8.astype(np.float64) @ T[0] + 16


def avg_psnr(gt_u8, pred_u8, t_border=2, sp_border=8, frames=None) -> float:
    """utils.AVG_PSNR on uint8 clips (T, H, W, 3); ``frames``: score only these indices (inside the t_border)."""
    diff = np.stack([y_of(a) - y_of(b) for a, b in zip(gt_u8, pred_u8)])
    diff = diff[:, sp_border:diff.shape[1] - sp_border, sp_border:diff.shape[2] - sp_border]
    idx = list(range(t_border, len(diff) - t_border)) if frames is None else frames
    return float(np.mean([20 * np.log10(255.0 / np.sqrt(np.mean(diff[i] ** 2))) for i in idx]))


def to_u8(x: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float -> (T, H, W, 3) uint8 as test.py writes its PNGs: np.around(clip(x, 0, 1) * 255)."""
    return np.around(x.clamp(0, 1).permute(0, 2, 3, 1).double().numpy() * 255).astype(np.uint8)


def official_frames(mirror: str, seq: str, n: int):
    from PIL import Image
    out = []
    for i in range(1, n + 1):
        try:
            blob = subprocess.run(["git", "--git-dir", mirror, "show", f"HEAD:results/16L/G/{seq}/Frame{i:03d}.png"],
                                  capture_output=True, check=True).stdout
        except (subprocess.CalledProcessError, FileNotFoundError):
            return None
        if not blob.startswith(b"\x89PNG"):
            return None      # an LFS pointer or absent
        out.append(np.asarray(Image.open(io.BytesIO(blob)).convert("RGB")))
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", default=None, help="default: what load_model('duf') finds (official, else trained here)")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "vid4_gt"))
    ap.add_argument("--mirror", default="/work/.mirror/yhjo09+VSR-DUF/repo")
    ap.add_argument("--seqs", nargs="+", default=["city", "walk"])
    ap.add_argument("--stride", type=int, default=1, help="score every k-th frame of those AVG_PSNR keeps "
                    "(DUF computed for those only, each from its own 7 frames); 1 = all")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "duf_vid4_bd.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = load_model("duf", variant="16L", scale=4, weights=args.weights)
    dt = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    model = model.to(dt)
    res = {"stride": args.stride, "weights": model.weights_path, "layout": model.weights_layout, "degradation": "BD x4 (sigma 1.6, 13x13)",
           "metric": "official AVG_PSNR: Y, 8-px border, 2 frames each end dropped", "machine": "2-core CPU, shared",
           "seqs": {}}
    print("weights", model.weights_path, f"({model.weights_layout})", flush=True)
    for seq in args.seqs:
        gt = np.stack(read_folder(os.path.join(args.data, seq)))
        hr = torch.from_numpy(gt).permute(0, 3, 1, 2).float() / 255
        lr = bd_degrade(hr, 4)
        idx = list(range(2, len(gt) - 2))[::args.stride]
        t0 = time.time()
        xp = torch.nn.functional.pad(lr, (0, 0, 0, 0, 0, 0, 3, 3))      # zero frames beyond the ends (test.py)
        y = torch.zeros(len(gt), 3, gt.shape[1], gt.shape[2])
        with torch.inference_mode():
            for i in idx:
                y[i] = model.forward_window(xp[i:i + 7][None].to(dt))[0].float()
        sec = time.time() - t0
        bic = imresize_torch(lr, lr.shape[-2] * 4, lr.shape[-1] * 4, 4.0)
        off = official_frames(args.mirror, seq, len(gt))
        ok = off is not None and off.shape == gt.shape
        row = {"frames": len(gt), "size": f"{gt.shape[2]}x{gt.shape[1]}", "scored_frames": idx,
               "duf_here": avg_psnr(gt, to_u8(y), frames=idx), "bicubic": avg_psnr(gt, to_u8(bic), frames=idx),
               "duf16L_official_frames": avg_psnr(gt, off, frames=idx) if ok else None,
               "all_frames_bicubic": avg_psnr(gt, to_u8(bic)),
               "all_frames_duf16L_official": avg_psnr(gt, off) if ok else None,
               "seconds_duf": round(sec, 1), "dtype": args.dtype}
        res["seqs"][seq] = row
        print(seq, json.dumps(row), flush=True)
    keys = ("duf_here", "bicubic", "duf16L_official_frames")
    res["mean"] = {k: float(np.mean([r[k] for r in res["seqs"].values()])) if all(r[k] is not None for r in res["seqs"].values()) else None for k in keys}
    print("mean", json.dumps(res["mean"]), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
