#!/usr/bin/env python3
"""meta_upscale microbenchmark: 64-channel features at 180x320 (r = 2.3, 4.0) and 540x960 (r = 2.0), 3 output
channels, 3x3, MLP 3 -> 256 -> 1728. eager = the op's PyTorch path (MLP once per offset pair, unfold, gather,
einsum per row class; the literal per-pixel Meta-SR code needs gigabytes here) vs triton / cuda kernels.
torch.compile adds nothing over eager for this path (data-dependent tables), so it is not timed by default.

    python bench/bench_meta_upscale.py [--dtype fp16|bf16|fp32] [--backward] [--dry-run]
Rows go to bench/results/ops.csv (see bench/common.py). Refuses to run without a CUDA device.
"""
import torch

import common
from vsr_engine import ops
from vsr_engine.ops.meta_upscale import _tables, meta_out_size


def main(argv=None):
    ap = common.parser(__doc__.splitlines()[0])
    ap.set_defaults(impls="eager,triton,cuda")
    args = ap.parse_args(argv)
    dev = common.require_gpu(args)
    env = common.env_info(dev)
    dtype = common.DTYPES[args.dtype]
    cases = [("64ch_180x320_r2.3", (1, 64, 180, 320, 2.3)), ("64ch_180x320_r4", (1, 64, 180, 320, 4.0)),
             ("64ch_540x960_r2", (1, 64, 540, 960, 2.0))]
    hidden = 256
    if args.dry_run:
        cases, hidden = [("dry_4ch_5x6_r2.3", (1, 4, 5, 6, 2.3))], 16
    rows = []
    for name, (n, c, h, w, r) in cases:
        def make(n=n, c=c, h=h, w=w):
            t = lambda *s: torch.randn(*s, device=dev, dtype=dtype)  # noqa: E731
            return t(n, c, h, w), t(hidden, 3), t(hidden), t(9 * c * 3, hidden) / hidden ** 0.5, t(9 * c * 3)
        a = make()
        oh, ow = meta_out_size(h, w, r)
        tb = _tables(h, w, r, dev)
        pairs = tb["off_h"].numel() * tb["off_w"].numel()
        min_bytes = common.nbytes(a[0]) + n * 3 * oh * ow * a[0].element_size() + pairs * 9 * c * 3 * 4

        def eager(*z, r=r):
            with ops.use_backend("torch", op="meta_upscale"):
                return ops.meta_upscale(z[0], r, *z[1:])
        rows += common.run_case("meta_upscale", name, f"x{(n, c, h, w)} r={r} -> {(n, 3, oh, ow)}", dtype, make,
                                eager, lambda *z, r=r: ops.meta_upscale(z[0], r, *z[1:]), min_bytes, args, dev, env,
                                notes=f"{pairs} offset pairs; eager = per-offset torch path",
                                grad_inputs=tuple(range(5)))
    common.write_rows(rows, args)


if __name__ == "__main__":
    main()
