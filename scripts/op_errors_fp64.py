"""Errors of the triton kernels and of the torch reference, both against the fp64 reference, at the shapes whose
GPU op tests failed on the H200 (issue 27; docs/gpu_op_tests.md has the tables this prints).

    TRITON_INTERPRET=1 OMP_NUM_THREADS=1 python3 scripts/op_errors_fp64.py [flow_warp] [dwpw_conv2d] [meta_upscale]
        [--margin 0]   # flow_warp: the test inputs as they were on the H200 (sample points may sit on pixels)
        [--unrounded]  # the fp64 reference on the unrounded inputs (the rule the H200 run used)

The kernels run under the triton interpreter (its block sizes, numpy fp32 arithmetic), the torch reference on the
CPU: the numbers say which side of a GPU failure was inaccurate, not what cuDNN or the GPU kernels give exactly.
The runs are the ones tests/ops/op_testing.check_against_ref compares (same inputs, seed, upstream gradients).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests", "ops")]

import torch  # noqa: E402

import test_dwpw_conv2d as tdw  # noqa: E402
import test_flow_warp as tfw  # noqa: E402
import test_meta_upscale as tmu  # noqa: E402
from op_testing import err, runs_vs_fp64  # noqa: E402
from vsr_engine.ops import (dwpw_conv2d, dwpw_conv2d_ref, flow_warp, meta_upscale, meta_upscale_ref,  # noqa: E402
                             use_backend)

NAMES = {torch.float32: "fp32", torch.float16: "fp16"}


def table(label, fn, ref, args, grad_idx, dtype, rounded=True):
    t0 = time.perf_counter()
    (ok, gk), (o64, g64), (ot, gt) = runs_vs_fp64(fn, ref, args, grad_idx, dtype, rounded=rounded)
    rows = [(f"output {i}", a, b, c) for i, (a, b, c) in enumerate(zip(ok, o64, ot))]
    rows += [(f"grad {i}", a, b, c) for i, a, b, c in zip(grad_idx, gk, g64, gt)]
    print(f"\n{label} {NAMES[dtype]}{'' if rounded else ' (fp64 on unrounded inputs)'}"
          f"  ({time.perf_counter() - t0:.0f} s)")
    print(f"  {'tensor':8} {'kernel-fp64':>12} {'torch-fp64':>12} {'kernel-torch':>13} {'max|fp64|':>10}")
    for name, a, b, c in rows:
        print(f"  {name:8} {err(a, b):12.3g} {err(c, b):12.3g} {err(a, c):13.3g} {b.abs().max().item():10.3g}")


def forced(f, **kw):
    def run(*a, **kw2):
        with use_backend("triton"):
            return f(*a, **kw, **kw2)
    return run


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ops", nargs="*", default=["flow_warp", "dwpw_conv2d", "meta_upscale"])
    ap.add_argument("--margin", type=float, default=tfw.MARGIN, help="flow_warp inputs: px from pixel rows")
    ap.add_argument("--unrounded", action="store_true", help="fp64 reference on the unrounded inputs")
    a = ap.parse_args(argv)
    from vsr_engine.ops import _backend
    if not _backend.INTERPRET:
        ap.error("set TRITON_INTERPRET=1 before Python starts (the kernels run in the interpreter)")
    torch.set_num_threads(1)
    if "flow_warp" in a.ops:
        for shape in ((1, 64, 11, 13), (2, 64, 180, 320)):
            for pm in ("zeros", "border"):
                table(f"flow_warp {shape} {pm} margin {a.margin:g}", forced(flow_warp, padding_mode=pm),
                      lambda x, f, pm=pm: tfw.ref(x, f, pm), list(tfw.inputs(*shape, margin=a.margin)), [0, 1],
                      torch.float32, not a.unrounded)
    if "dwpw_conv2d" in a.ops:
        for shape in ((1, 64, 64, 180, 320), (1, 512, 64, 60, 80)):
            table(f"dwpw_conv2d {shape}", lambda *z: forced(dwpw_conv2d)(*z[:5], "lrelu", z[5]),
                  lambda *z: dwpw_conv2d_ref(*z[:5], "lrelu", z[5]), tdw.inputs(*shape), list(range(6)), torch.float32,
                  not a.unrounded)
    if "meta_upscale" in a.ops:
        for case, dt in (((1, 64, 3, 4, 1.7, 3, 3), torch.float16), ((1, 64, 50, 50, 2.3, 3, 3), torch.float32),
                         ((1, 64, 45, 80, 4.0, 3, 3), torch.float32)):
            n, c, h, w, scale, o, k = case
            table(f"meta_upscale {case}", lambda f, *z, s=scale, o=o, k=k: forced(meta_upscale)(
                      f, s, *z, out_channels=o, kernel_size=k),
                  lambda f, *z, s=scale, o=o, k=k: meta_upscale_ref(f, s, *z, o, k),
                  tmu.inputs(n, c, h, w, o, k, hidden=256), list(range(5)), dt, not a.unrounded)


if __name__ == "__main__":
    main()
