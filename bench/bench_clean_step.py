#!/usr/bin/env python3
"""clean_step microbenchmark: RealBasicVSR's cleaning-loop step (x + residue, mean|residue| on the device) for
a 15-frame RGB window at 180x320 and 540x960; eager (add + abs + mean, 3 kernels) vs torch.compile vs the
fused triton / cuda kernels.

    python bench/bench_clean_step.py [--dtype fp16|bf16|fp32] [--backward] [--dry-run]
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
    cases = [("15x3_180x320", (15, 3, 180, 320)), ("15x3_540x960", (15, 3, 540, 960))]
    if args.dry_run:
        cases = [("dry_2x3_9x11", (2, 3, 9, 11))]
    rows = []
    for name, shape in cases:
        def make(shape=shape):
            return (torch.rand(*shape, device=dev, dtype=dtype),
                    torch.randn(*shape, device=dev, dtype=dtype) * 0.01)
        x, r = make()
        rows += common.run_case("clean_step", name, str(tuple(shape)), dtype, make, ops.clean_step_ref, ops.clean_step,
                                common.nbytes(x, r, x), args, dev, env, grad_inputs=(0, 1))
    common.write_rows(rows, args)


if __name__ == "__main__":
    main()
