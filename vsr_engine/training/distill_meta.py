"""DSCVSR distilled from the basicvsr-meta teacher at every scale -- with/without ablation at one budget.

    python -m vsr_engine.training.distill_meta --arm distill|plain --steps N [--head FILE] [--cache runs/meta_cache]

Adam with a cosine decay over the steps; every ``--val-every`` steps the held-out Y-PSNR is measured and the best
student so far is exported to ``--out`` (step 0, the shipped weights, counts: nothing worse is ever written).

Both arms start from the shipped DSCVSR weights and see the same windows, scales and frames (same seed, same
steps); they differ only in the loss:
  plain:   Charbonnier(student(LR, r), HR)
  distill: the same + Charbonnier(student(LR, r), teacher(LR, r)) + w_feat * L1(adapter(student fused feature),
           teacher fused feature)
The teacher is basicvsr-meta (official BasicVSR Vimeo-BI + the trained head): its fused LR feature (a function of
both propagation branches) and its x4 output are read from the ``train_meta cache`` windows, so the teacher costs
nothing here; its output at r is resample_x4(y4, r) + head(fused, r). LR = MATLAB imresize(HR, 1/r) as in the
cache. Held-out windows (``--val-clips`` sources, or the last ``--val``, as in ``train_meta``) give the Y-PSNR of
each arm.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..imresize import imresize
from .common import charbonnier
from .meta import _y_psnr, split_held_out


def _lr(item, sl):
    hr = item["hr"][sl].numpy()
    lr = np.stack([imresize(f, 1.0 / item["scale"]) for f in hr])
    return torch.from_numpy(lr).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.training.distill_meta", description=__doc__.split("\n")[0])
    ap.add_argument("--arm", choices=["distill", "plain"], required=True)
    ap.add_argument("--cache", default="runs/meta_cache")
    ap.add_argument("--head", default="runs/basicvsr_meta_head.safetensors")
    ap.add_argument("--out", default=None)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--frames", type=int, default=3)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--w-out", type=float, default=1.0)
    ap.add_argument("--w-feat", type=float, default=0.1)
    ap.add_argument("--val", type=int, default=10, help="held-out windows: the last N, or the first N of --val-clips")
    ap.add_argument("--val-clips", nargs="+", default=None, help="hold out every window of these sources")
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    from safetensors.torch import load_file
    from .. import load_model
    from ..models.basicvsr_meta import BasicVSRMeta
    files = sorted(f for f in os.listdir(args.cache) if f.endswith(".pt"))
    items = [torch.load(os.path.join(args.cache, f), weights_only=False) for f in files]
    val, tr = split_held_out(items, args.val_clips, args.val, args.cache)
    val = val[:args.val]   # with --val-clips: the first --val of them (a DSCVSR forward per window)
    head = {k: v.float() for k, v in load_file(args.head).items()}
    teacher = BasicVSRMeta(head_mid=head["conv.weight"].shape[0], head_hidden=head["fc1.weight"].shape[0])
    teacher.head.load_state_dict(head)
    student = load_model("dscvsr").train()
    for p in student.spynet.parameters():
        p.requires_grad_(False)
    adapt = nn.Conv2d(student.num_feat, 64, 1)
    fused_s = []
    student.fusion.register_forward_hook(lambda m, i, o: fused_s.append(F.leaky_relu(o, 0.1)))
    params = [p for p in student.parameters() if p.requires_grad] + list(adapt.parameters())
    opt = torch.optim.Adam(params, lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
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

    def export(step):
        if args.out:
            from .common import export_weights
            from safetensors import safe_open
            with safe_open(student.weights_path, "pt") as f:   # the starting weights' architecture
                cfg = json.loads((f.metadata() or {}).get("config", "{}"))
            args.kept_step = step
            export_weights(student.eval(), cfg, args.out, args)
            student.train()

    start = evaluate()
    best, best_step = start, 0
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
        sched.step()
        if step % 25 == 0:
            print(json.dumps({"arm": args.arm, "step": step, "loss": round(loss.item(), 5),
                              "s": round(time.time() - t0)}), flush=True)
        if step % args.val_every == 0 or step == args.steps:
            res = evaluate()
            kept = res["student"] > best["student"]   # keep the best student on the held-out windows
            if kept:
                best, best_step = res, step
                export(step)
            print(json.dumps({"arm": args.arm, "step": step, **res, "kept": kept}), flush=True)
    rec = {"arm": args.arm, "steps": args.steps, "start": start, "best": best, "best_step": best_step,
           "args": {k: v for k, v in vars(args).items()}}
    print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
