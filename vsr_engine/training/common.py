"""What the training recipes share: the Charbonnier loss, the training precision (the CPU plan), the fp16
safetensors export and the loss-curve plot."""
from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import List

import torch


def charbonnier(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return torch.sqrt((a - b) ** 2 + eps * eps).mean()


def export_weights(student, cfg: dict, path: str, args=None) -> None:
    """fp16 safetensors with the architecture and training command in its metadata."""
    from safetensors.torch import save_file
    sd = {k: v.detach().half().contiguous() for k, v in student.state_dict().items()}
    meta = {"model": "dscvsr", "config": json.dumps(cfg)}
    if args is not None:
        meta["train_args"] = json.dumps({k: v for k, v in vars(args).items() if k != "func"})
    save_file(sd, path + ".tmp", metadata=meta)
    os.replace(path + ".tmp", path)


def _precision(args, device: torch.device, *models):
    """The training precision: ``--precision auto`` on a CPU is the CPU plan (``vsr_engine.cpu_plan``): bf16
    autocast where the CPU has bf16 hardware, with fp32 master weights, optimizer state and losses, and the models'
    weights in channels-last; ``fp32`` (and any CUDA device) trains as before. Returns the autocast context."""
    mode = getattr(args, "precision", "fp32")
    if mode == "auto" and device.type == "cpu":
        from ..cpu_plan import plan
        if plan()["dtype"] == torch.bfloat16:
            for m in models:
                m.to(memory_format=torch.channels_last)
                for sub in m.modules():          # Meta-Upscale heads: their weight MLP in bf16 too (a fixed cost
                    if hasattr(sub, "mlp_lowp"):  # per call over every offset pair; fp32 in the op otherwise)
                        sub.mlp_lowp = True
            print("precision: " + str(plan()["why"]), file=sys.stderr)
            return _bf16_step
    return contextlib.nullcontext


@contextlib.contextmanager
def _bf16_step():
    """The CPU plan's autocast region, with the custom ops' weight casts made once per region (as autocast's own)."""
    from ..ops._autocast import weight_cast_cache
    with torch.autocast("cpu", dtype=torch.bfloat16), weight_cast_cache():
        yield


def plot_curve(rows: List[dict], path: str) -> None:
    """Loss (and validation PSNR where measured) against step, drawn with PIL (no matplotlib needed)."""
    from PIL import Image, ImageDraw
    W_, H_, m = 900, 420, 50
    img = Image.new("RGB", (W_, H_), "white")
    d = ImageDraw.Draw(img)
    steps = [r["step"] for r in rows]
    if not steps:
        return
    smax = max(steps) or 1

    def series(key, color, panel):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) not in (None, "")]
        if len(pts) < 1:
            return
        vals = [float(v) for _, v in pts]
        lo, hi = min(vals), max(vals)
        hi = hi if hi > lo else lo + 1
        x0 = m + panel * (W_ // 2)
        w = W_ // 2 - 2 * m
        d.rectangle([x0, m, x0 + w, H_ - m], outline="black")
        d.text((x0, 10), f"{key}: {vals[0]:.4g} -> {vals[-1]:.4g}", fill=color)
        d.text((x0, H_ - m + 5), f"step 0 .. {smax}", fill="black")
        d.text((x0 - 45, m), f"{hi:.3g}", fill="black")
        d.text((x0 - 45, H_ - m - 10), f"{lo:.3g}", fill="black")
        xy = [(x0 + w * s / smax, H_ - m - (H_ - 2 * m) * (float(v) - lo) / (hi - lo)) for s, v in pts]
        if len(xy) > 1:
            d.line(xy, fill=color, width=2)
        for p in xy[-1:]:
            d.ellipse([p[0] - 3, p[1] - 3, p[0] + 3, p[1] + 3], fill=color)

    series("loss_avg", "blue", 0)
    series("val_psnr", "red", 1)
    img.save(path)


def add_run_arguments(ap) -> None:
    """The options every recipe's run shares: seed, threads, precision (the CPU plan), device, logging,
    checkpointing and resume."""
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--precision", choices=("auto", "fp32"), default="auto",
                    help="auto: the CPU plan (bf16 autocast + channels-last, fp32 masters) where it applies")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--save-every", type=int, default=50)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pth")
    ap.add_argument("--stop-at", type=int, default=0, help="stop (checkpointed) after this step; --resume goes on")
