#!/usr/bin/env python3
"""dwpw_conv2d microbenchmark: depthwise 3x3 + pointwise 1x1 (64 -> 64 channels, LeakyReLU, + residual) at
180x320 and 540x960; eager = the two conv2d calls + activation + add, vs torch.compile of that, vs the fused
triton / cuda kernels (the 64 x H x W intermediate never reaches memory).

    python bench/bench_dwpw_conv2d.py [--dtype fp16|bf16|fp32] [--backward] [--dry-run]
Rows go to bench/results/ops.csv (see bench/common.py). Refuses to run without a CUDA device.
"""
import torch

import common
from vsr_engine import ops


def main(argv=None):
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    dev = common.require_gpu(args)
    env = common.env_info(dev)
    dtype = common.DTYPES[args.dtype]
    cases = [("64to64_k3_180x320", (1, 64, 64, 180, 320)), ("64to64_k3_540x960", (1, 64, 64, 540, 960)),
             ("512to64_k3_90x160", (1, 512, 64, 90, 160))]  # a late DSCVSR dense-block layer
    if args.dry_run:
        cases = [("dry_8to8_7x9", (1, 8, 8, 7, 9))]
    rows = []
    for name, (n, c, o, h, w) in cases:
        def make(n=n, c=c, o=o, h=h, w=w):
            t = lambda *s: torch.randn(*s, device=dev, dtype=dtype)  # noqa: E731
            return t(n, c, h, w), t(c, 1, 3, 3), t(c), t(o, c, 1, 1) / c ** 0.5, t(o), t(n, o, h, w)
        a = make()
        out = torch.empty(n, o, h, w, device=dev, dtype=dtype)
        rows += common.run_case(
            "dwpw_conv2d", name, f"x{(n, c, h, w)} -> {o}", dtype, make,
            lambda *z: ops.dwpw_conv2d_ref(*z[:5], "lrelu", z[5]), lambda *z: ops.dwpw_conv2d(*z[:5], "lrelu", z[5]),
            common.nbytes(*a, out), args, dev, env, notes="lrelu + residual", grad_inputs=tuple(range(6)))
    common.write_rows(rows, args)


if __name__ == "__main__":
    main()
