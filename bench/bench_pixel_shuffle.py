#!/usr/bin/env python3
"""pixel_shuffle microbenchmark at the BasicVSR tail shapes: upconv1 output (256 ch at LR) -> 2x and upconv2
output (256 ch at 2x) -> 4x, for LR 180x320 and 540x960; the fused bias + shuffle + LeakyReLU(0.1) (eager:
``leaky_relu(pixel_shuffle(x + bias))``) and the plain shuffle. eager vs torch.compile vs triton vs cuda.

    python bench/bench_pixel_shuffle.py [--dtype fp16|bf16|fp32] [--backward] [--dry-run]
Rows go to bench/results/ops.csv (see bench/common.py). Refuses to run without a CUDA device.
"""
import torch
import torch.nn.functional as F

import common
from vsr_engine import ops


def eager_fused(x, b):
    return F.leaky_relu(F.pixel_shuffle(x + b.view(-1, 1, 1), 2), 0.1)


def main(argv=None):
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    dev = common.require_gpu(args)
    env = common.env_info(dev)
    dtype = common.DTYPES[args.dtype]
    cases = [("tail_2x_lr180x320", (1, 256, 180, 320)), ("tail_4x_lr180x320", (1, 256, 360, 640)),
             ("tail_2x_lr540x960", (1, 256, 540, 960)), ("tail_4x_lr540x960", (1, 256, 1080, 1920))]
    if args.dry_run:
        cases = [("dry_16ch_5x7", (1, 16, 5, 7))]
    rows = []
    for name, shape in cases:
        def make(shape=shape):
            return (torch.randn(*shape, device=dev, dtype=dtype), torch.randn(shape[1], device=dev, dtype=dtype))
        x, b = make()
        out_bytes = common.nbytes(x)
        rows += common.run_case("pixel_shuffle", name + "_bias_lrelu", f"{tuple(x.shape)} r=2", dtype, make,
                                eager_fused, lambda a, bb: ops.pixel_shuffle_lrelu(a, 2, bb),
                                common.nbytes(x, b) + out_bytes, args, dev, env,
                                notes="eager adds the bias in its own pass", grad_inputs=(0, 1))
        rows += common.run_case("pixel_shuffle", name + "_plain", f"{tuple(x.shape)} r=2", dtype, lambda: make()[:1],
                                lambda a: F.pixel_shuffle(a, 2), lambda a: ops.pixel_shuffle(a, 2),
                                common.nbytes(x) + out_bytes, args, dev, env, grad_inputs=(0,))
    common.write_rows(rows, args)


if __name__ == "__main__":
    main()
