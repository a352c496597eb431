#!/usr/bin/env python3
"""The CPU plan against eager fp32: model step speed, fidelity and fraction of this CPU's peak, in one process.

    python3 bench/bench_cpu.py [--frames 6] [--reps 2] [--threads N] [--models basicvsr,realbasicvsr] [--dry-run]

For each model (official layouts: BasicVSR with the official REDS4 weights, RealBasicVSR random-init unless
``--realbasicvsr-weights``), on real frames (REDS LR demo clip, 180x320, from ../shared/data), it alternates
``--reps`` times: the plain model forward in fp32 NCHW (eager PyTorch, the ops' torch backend) and the fast step
the Engine runs on this CPU (``--dtype auto``: ``vsr_engine.cpu_plan``), each timed alone on the same window.
Reports frames/s, the ratio, Y-PSNR and RGB PSNR of the plan's output against the fp32 output, and the achieved
convolution TFLOP/s (convolution FLOPs counted by torch's FlopCounterMode on the eager forward) against this CPU's
measured GEMM peak in fp32 and bf16 (a 4096^3 matmul, same run). Rows are appended to bench/results/cpu.csv with
date, git sha, CPU model and thread count. Timing thresholds are never asserted anywhere.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import math
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)
from common import cpu_model, git_sha  # noqa: E402
from vsr_engine import load_model, ops  # noqa: E402
from vsr_engine.cpu_plan import describe, plan  # noqa: E402
from vsr_engine.fast import FastBasicVSR, accelerate  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402

OUT = os.path.join(HERE, "results", "cpu.csv")
FIELDS = ["date", "git_sha", "cpu", "threads", "torch", "model", "weights", "frames", "size", "impl", "dtype",
          "s_per_window", "fps", "speedup", "conv_tflops", "peak_tflops", "frac_peak", "psnr_y_db", "psnr_rgb_db",
          "plan"]


def gemm_tflops(dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    ts = []
    for _ in range(3):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * n ** 3 / min(ts) / 1e12


def real_frames(n: int, size) -> torch.Tensor:
    from PIL import Image
    files = sorted(glob.glob(os.path.join(REPO, "..", "shared", "data", "reds_lr_demo_000", "*.png")))[:n]
    if len(files) < n:
        raise SystemExit(f"bench_cpu: need {n} frames in ../shared/data/reds_lr_demo_000, found {len(files)}")
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255)
                     .permute(2, 0, 1) for f in files])
    h, w = size
    return x[:, :, :h, :w].unsqueeze(0).contiguous()


def conv_flops(model, x) -> float:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad(), ops.use_backend("torch"):
        model(x)
    return float(sum(v for k, v in fc.get_flop_counts().get("Global", {}).items()
                     if "convolution" in str(k)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--models", default="basicvsr,realbasicvsr")
    ap.add_argument("--realbasicvsr-weights", default=None)
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--dry-run", action="store_true", help="tiny frames, 1 rep, print rows, write nothing")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    size = (24, 40) if a.dry_run else (180, 320)
    frames, reps = (2, 1) if a.dry_run else (a.frames, a.reps)
    x = real_frames(frames, size)
    p = plan()
    pdt = p["dtype"]
    peak = {torch.float32: gemm_tflops(torch.float32, 512 if a.dry_run else 4096)}
    if pdt != torch.float32:
        peak[pdt] = gemm_tflops(pdt, 512 if a.dry_run else 4096)
    print(f"{describe()}; threads {torch.get_num_threads()}; GEMM peak " +
          ", ".join(f"{str(k).split('.')[1]} {v:.2f} TFLOP/s" for k, v in peak.items()), flush=True)
    env = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "git_sha": git_sha(),
           "cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    rows = []
    for name in [m for m in a.models.split(",") if m]:
        if name == "realbasicvsr":
            m = load_model(name, weights=a.realbasicvsr_weights or False)
            wdesc = os.path.basename(a.realbasicvsr_weights) if a.realbasicvsr_weights else "random init (seed 0)"
        else:
            m = load_model(name)
            wdesc = os.path.basename(getattr(m, "weights_path", "") or "official")
        m = m.eval()
        flops = conv_flops(m, x)
        fast = accelerate(m, dtype=pdt)  # the CPU plan: bf16 + fp32 islands, or fp32; channels-last, oneDNN
        t_eager, t_fast = [], []
        with torch.no_grad():
            for _ in range(reps):  # alternating, each alone
                with ops.use_backend("torch"):
                    t = time.perf_counter()
                    ref = m(x)
                    t_eager.append(time.perf_counter() - t)
                t = time.perf_counter()
                out = fast(x).float()
                t_fast.append(time.perf_counter() - t)
        se, sf = min(t_eager), min(t_fast)
        y_ref = (ref.clamp(0, 1)[0] * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        y_out = (out.clamp(0, 1)[0] * 255).round().permute(0, 2, 3, 1).numpy().astype(np.uint8)
        py = float(np.mean([psnr_y(o, r) for o, r in zip(y_out, y_ref)]))
        mse = (out.clamp(0, 1) - ref.clamp(0, 1)).square().mean().item()
        prgb = 10 * math.log10(1 / max(mse, 1e-20))
        for impl, s, dtp in (("eager fp32 NCHW", se, torch.float32), ("cpu plan", sf, pdt)):
            tf = flops / s / 1e12
            r = {**env, "model": name, "weights": wdesc, "frames": frames, "size": f"{size[0]}x{size[1]}",
                 "impl": impl, "dtype": str(dtp).split(".")[1], "s_per_window": round(s, 3),
                 "fps": round(frames / s, 4), "speedup": round(se / s, 3), "conv_tflops": round(tf, 4),
                 "peak_tflops": round(peak[dtp], 3), "frac_peak": round(tf / peak[dtp], 3),
                 "psnr_y_db": "" if impl.startswith("eager") else round(py, 2),
                 "psnr_rgb_db": "" if impl.startswith("eager") else round(prgb, 2),
                 "plan": "" if impl.startswith("eager") else describe()}
            rows.append(r)
            print(f"{name:13s} {impl:16s} {s:8.2f} s/window  {r['fps']:.3f} fps  x{r['speedup']:.2f}  "
                  f"{tf:.3f} TFLOP/s ({100 * r['frac_peak']:.0f}% of {r['dtype']} GEMM peak)"
                  + ("" if impl.startswith("eager") else f"  Y-PSNR {py:.2f} dB, RGB {prgb:.2f} dB vs fp32"),
                  flush=True)
        del fast
    if a.dry_run:
        print(f"dry run: {len(rows)} rows not written")
        return rows
    new = not os.path.exists(a.out)
    with open(a.out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
    print(f"appended {len(rows)} rows to {a.out}")
    return rows


if __name__ == "__main__":
    main()
