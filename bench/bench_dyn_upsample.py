#!/usr/bin/env python3
"""dyn_upsample microbenchmark: DUF's output stage, eager PyTorch written the way the official TF graph computes it
(identity-kernel conv for the 5x5 neighbourhood, softmax, per-pixel matmul, depth_to_space per colour, residual
depth_to_space) vs vsr_engine's dyn_upsample (triton / cuda / cupy), x4 of a 3-channel 180x320 frame (720p out)
and x4 of 540x960, forward and (--backward) forward+backward.

    python bench/bench_dyn_upsample.py [--dtype fp16|bf16|fp32] [--backward] [--dry-run]
    python bench/bench_dyn_upsample.py --cpu [--backward]     # CPU: official-style eager vs the op's torch path
Rows go to bench/results/ops.csv (see bench/common.py); the GPU mode refuses to run without a CUDA device. The CPU
mode times what a CPU user runs (the op falls back to ``dyn_upsample_ref``: unfold + einsum) against the
official-style eager graph, one thread, fp32; it prints and writes nothing (the machine is shared and noisy).
"""
import sys
import time

import torch
import torch.nn.functional as F

import common
from vsr_engine import ops


def official_style(x, f, res, r=4):
    """The TF graph of VSR-DUF (utils.DynFilter3D + test.G), op for op, in NCHW."""
    n, c, h, w = x.shape
    eye = torch.eye(25, dtype=x.dtype, device=x.device).view(25, 1, 5, 5)
    local = F.conv2d(x.reshape(n * c, 1, h, w), eye, padding=2).view(n, c, 25, h, w)  # x_localexpand
    filt = torch.softmax(f.view(n, 25, r * r, h, w), dim=1)
    outs = []
    for ch in range(c):
        t = torch.einsum("ntyx,ntkyx->nkyx", local[:, ch], filt)  # matmul -> [B, H, W, R*R]
        outs.append(F.pixel_shuffle(t, r))  # tf.depth_to_space with one channel
    y = torch.cat(outs, dim=1)
    rd = res.view(n, r, r, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * r, w * r)  # depth_to_space_3D
    return y + rd


def make_inputs(n, c, h, w, r, dev, dtype):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(n, c, h, w, generator=g).to(dev, dtype)
    f = (torch.randn(n, 25 * r * r, h, w, generator=g) * 2).to(dev, dtype)
    res = (torch.randn(n, c * r * r, h, w, generator=g) * 0.1).to(dev, dtype)
    return x, f, res


def cpu_main(backward: bool, iters: int = 5):
    torch.set_num_threads(1)
    x, f, res = make_inputs(1, 3, 180, 320, 4, torch.device("cpu"), torch.float32)
    err = (official_style(x, f, res) - ops.dyn_upsample(x, f, res, 4)).abs().max().item()
    print(f"CPU (shared machine, 1 thread, fp32, median of {iters}), x4 3ch 180x320 -> 720x1280; "
          f"max |official-style - op| = {err:.3g}")
    fns = {"eager (official-style graph)": lambda *a: official_style(*a),
           "vsr_engine dyn_upsample (torch path)": lambda *a: ops.dyn_upsample(*a, 4)}
    for ps in ["fwd"] + (["fwd+bwd"] if backward else []):
        base = None
        for name, fn in fns.items():
            ts = []
            for _ in range(iters + 1):
                a = [t.detach().requires_grad_(ps != "fwd") for t in (x, f, res)]
                t0 = time.perf_counter()
                if ps == "fwd":
                    with torch.no_grad():
                        fn(*a)
                else:
                    fn(*a).sum().backward()
                ts.append(time.perf_counter() - t0)
            ms = sorted(ts[1:])[len(ts[1:]) // 2] * 1e3
            base = base or ms
            print(f"  {ps:7s} {name:38s} {ms:9.1f} ms   x{base / ms:.2f} vs eager")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if "--cpu" in argv:
        return cpu_main("--backward" in argv)
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    dev = common.require_gpu(args)
    env = common.env_info(dev)
    dtype = common.DTYPES[args.dtype]
    cases = [("3ch_x4_180x320", (1, 3, 180, 320)), ("3ch_x4_540x960", (1, 3, 540, 960))]
    if args.dry_run:
        cases = [("dry_3ch_x4_9x11", (1, 3, 9, 11))]
    rows = []
    for name, (n, c, h, w) in cases:
        def make(n=n, c=c, h=h, w=w):
            return make_inputs(n, c, h, w, 4, dev, dtype)
        x, f, res = make()
        out_bytes = x.element_size() * x.numel() * 16
        rows += common.run_case("dyn_upsample", name, f"x{tuple(x.shape)} f{tuple(f.shape)} res{tuple(res.shape)}",
                                dtype, make, official_style, lambda a, b, c_: ops.dyn_upsample(a, b, c_, 4),
                                common.nbytes(x, f, res) + out_bytes, args, dev, env,
                                notes="eager = the official TF graph op for op", grad_inputs=(0, 1, 2))
    common.write_rows(rows, args)


if __name__ == "__main__":
    main()
