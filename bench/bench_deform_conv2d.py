#!/usr/bin/env python3
"""deform_conv2d microbenchmark: TDAN's alignment shape (64 -> 64 channels, 3x3, 8 deformable groups, offsets of a
few pixels), forward and forward+backward, per implementation that can run here:
  eager       -- deform_conv2d_ref with autograd (plain torch: gathers + einsum);
  torch_op    -- the vsr_engine::deform_conv2d custom op on its torch path (same forward, explicit backward);
  torchvision -- torchvision.ops.deform_conv2d, when importable (a separate venv here: see
                 scripts/make_deform_fixtures.py);
  triton      -- the Triton kernels (CUDA tensors only: under the interpreter a timing means nothing);
  cuda, cupy  -- csrc/deform_conv2d.cu through the compiled extension / NVRTC (CUDA tensors, where that backend is
                 live: vsr_engine.ops.backend_info() says why not).
Median of --iters runs after --warmup. On a shared machine the absolute times are noisy: compare ratios taken in
one run.

    python3 bench/bench_deform_conv2d.py [--size 64x96] [--dtype fp32] [--iters 5] [--device cpu|cuda]
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vsr_engine.ops import backend_info, use_backend  # noqa: E402
from vsr_engine.ops.deform_conv2d import _deform_op, deform_conv2d, deform_conv2d_ref  # noqa: E402


def timed(fn, iters, warmup, dev):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="64x96")
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16", "fp64"))
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dev = torch.device(a.device)
    dt = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}[a.dtype]
    h, w = (int(v) for v in a.size.split("x"))
    c = a.channels
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, h, w, generator=g).to(dev, dt)
    off = (torch.randn(1, 8 * 18, h, w, generator=g) * 2).to(dev, dt)
    wt = (torch.randn(c, c, 3, 3, generator=g) / (9 * c) ** 0.5).to(dev, dt)
    b = torch.randn(c, generator=g).to(dev, dt)
    impls = {"eager": lambda *t: deform_conv2d_ref(*t, padding=1),
             "torch_op": lambda x_, o, w_, b_: _deform_op(x_, o, w_, b_, None, [1, 1], [1, 1], [1, 1], "torch")}
    try:
        import torchvision.ops
        impls["torchvision"] = lambda *t: torchvision.ops.deform_conv2d(*t, padding=1)
    except Exception as e:  # noqa: BLE001
        print(f"torchvision: not importable here ({type(e).__name__})")
    if dev.type == "cuda":
        info = backend_info()["deform_conv2d"]
        for name in ("triton", "cuda", "cupy"):
            if not info[name]["live"]:
                print(f"{name}: not live here ({info[name]['why']})")
                continue

            def run(*t, _b=name):
                with use_backend(_b, "deform_conv2d"):
                    return deform_conv2d(*t, padding=1)
            impls[name] = run
    print(f"deform_conv2d {c}->{c} 3x3 dg8 {h}x{w} {a.dtype} on {dev} (torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)); median of {a.iters}")
    base = {}
    for name, fn in impls.items():
        leaves = [t.clone().requires_grad_() for t in (x, off, wt, b)]

        def fwd():
            with torch.no_grad():
                fn(*leaves)

        def fwdbwd():
            for t in leaves:
                t.grad = None
            fn(*leaves).square().sum().backward()
        for ps, f in (("fwd", fwd), ("fwd+bwd", fwdbwd)):
            ms = timed(f, a.iters, a.warmup, dev)
            base.setdefault(ps, ms)
            print(f"  {name:12s} {ps:8s} {ms:10.2f} ms   x{base[ps] / ms:.2f} vs eager")


if __name__ == "__main__":
    main()
