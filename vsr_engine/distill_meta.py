"""DSCVSR distilled from the basicvsr-meta teacher at every scale -- with/without ablation at one budget.

    python -m vsr_engine.distill_meta --arm distill|plain --steps N [--head FILE] [--cache runs/meta_cache]

Both arms start from the shipped DSCVSR weights and see the same windows, scales and frames (same seed, same
steps); they differ only in the loss:
  plain:   Charbonnier(student(LR, r), HR)
  distill: the same + Charbonnier(student(LR, r), teacher(LR, r)) + w_feat * L1(adapter(student fused feature),
           teacher fused feature)
The teacher is basicvsr-meta (official BasicVSR Vimeo-BI + the trained head): its fused LR feature (a function of
both propagation branches) and its x4 output are read from the ``train_meta cache`` windows, so the teacher costs
nothing here; its output at r is resample_x4(y4, r) + head(fused, r). LR = MATLAB imresize(HR, 1/r) as in the
cache. Held-out windows (the last ``--val``, as in ``train_meta``) give the Y-PSNR of each arm.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .imresize import imresize
from .train import charbonnier
from .train_meta import _y_psnr


def _lr(item, sl):
    hr = item["hr"][sl].numpy()
    lr = np.stack([imresize(f, 1.0 / item["scale"]) for f in hr])
    return torch.from_numpy(lr).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.distill_meta", description=__doc__.split("\n")[0])
    ap.add_argument("--arm", choices=["distill", "plain"], required=True)
    ap.add_argument("--cache", default="runs/meta_cache")
    ap.add_argument("--head", default="runs/basicvsr_meta_head.safetensors")
    ap.add_argument("--out", default=None)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--w-out", type=float, default=1.0)
    ap.add_argument("--w-feat", type=float, default=0.1)
    ap.add_argument("--val", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    from safetensors.torch import load_file
    from . import load_model
    from .models.basicvsr_meta import BasicVSRMeta
    from .models.resample import resample_x4
    files = sorted(f for f in os.listdir(args.cache) if f.endswith(".pt"))
    items = [torch.load(os.path.join(args.cache, f), weights_only=False) for f in files]
    val, tr = items[-args.val:], items[:-args.val]
    teacher = BasicVSRMeta(head_mid=32, head_hidden=256)
    teacher.head.load_state_dict({k: v.float() for k, v in load_file(args.head).items()})
    student = load_model("dscvsr").train()
    for p in student.spynet.parameters():
        p.requires_grad_(False)
    adapt = nn.Conv2d(student.num_feat, 64, 1)
    fused_s = []
    student.fusion.register_forward_hook(lambda m, i, o: fused_s.append(F.leaky_relu(o, 0.1)))
    params = [p for p in student.parameters() if p.requires_grad] + list(adapt.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    rng = random.Random(args.seed)

    def teacher_out(item, sl):
        with torch.no_grad():
            return teacher.head_output(tuple(item["lr_hw"]), item["fused"][sl].float(), item["y4"][sl].float(),
                                       item["scale"])

    def evaluate():
        student.eval()
        res = {"student": [], "teacher": []}
        with torch.no_grad():
            for it in val:
                sl = slice(1, 1 + args.frames)
                y = student(_lr(it, sl), scale=it["scale"])[0]
                hr = it["hr"][sl].permute(0, 3, 1, 2).float().div(255)
                t = teacher_out(it, sl)
                h, w = min(y.shape[-2], hr.shape[-2]), min(y.shape[-1], hr.shape[-1])
                res["student"].append(_y_psnr(y[..., :h, :w], hr[..., :h, :w]))
                res["teacher"].append(_y_psnr(t[..., :h, :w], hr[..., :h, :w]))
        fused_s.clear()
        student.train()
        return {k: float(np.mean(v)) for k, v in res.items()}

    log = []
    start = evaluate()
    print(json.dumps({"arm": args.arm, "step": 0, **start}), flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        it = tr[rng.randrange(len(tr))]
        a = rng.randrange(it["hr"].shape[0] - args.frames + 1)
        sl = slice(a, a + args.frames)
        fused_s.clear()
        y = student(_lr(it, sl), scale=it["scale"])[0]
        hr = it["hr"][sl].permute(0, 3, 1, 2).float().div(255)
        h, w = min(y.shape[-2], hr.shape[-2]), min(y.shape[-1], hr.shape[-1])
        loss = charbonnier(y[..., :h, :w], hr[..., :h, :w])
        if args.arm == "distill":
            t = teacher_out(it, sl)
            loss = loss + args.w_out * charbonnier(y, t[..., :y.shape[-2], :y.shape[-1]])
            sf = torch.cat(fused_s)
            loss = loss + args.w_feat * F.l1_loss(adapt(sf), it["fused"][sl].float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 25 == 0:
            print(json.dumps({"arm": args.arm, "step": step, "loss": round(loss.item(), 5),
                              "s": round(time.time() - t0)}), flush=True)
    end = evaluate()
    rec = {"arm": args.arm, "steps": args.steps, "start": start, "end": end, "args": vars(args)}
    print(json.dumps(rec), flush=True)
    if args.out:
        from .train import export_weights
        cfg = {k: getattr(student, k, None) for k in ("num_feat",)}
        export_weights(student.eval(), cfg, args.out, args)


if __name__ == "__main__":
    main()
