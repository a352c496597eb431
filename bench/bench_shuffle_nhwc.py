#!/usr/bin/env python3
"""shuffle_nhwc microbenchmark: the upsampler's pixel shuffle x2 + bias + LeakyReLU on channels-last 256 -> 64
channels, at 180x320 and 540x960 inputs; eager PyTorch (bias add, pixel_shuffle, leaky_relu) vs the triton kernel.

    python bench/bench_shuffle_nhwc.py [--dtype fp16|bf16|fp32] [--dry-run]
Rows go to bench/results/ops.csv (see bench/common.py). Refuses to run without a CUDA device.
"""
import torch
import torch.nn.functional as F

import common
from vsr_engine.ops.shuffle_nhwc import shuffle_nhwc

CL = torch.channels_last


def cases(dev, dtype, dry):
    out = []
    for h, w in ([(9, 11)] if dry else [(180, 320), (540, 960)]):
        def make(h=h, w=w):
            y = torch.randn(1, 256, h, w, device=dev, dtype=dtype).contiguous(memory_format=CL)
            return y, torch.randn(256, device=dev, dtype=dtype)
        y, b = make()
        impls = {"eager": lambda y, b: F.leaky_relu(F.pixel_shuffle(y + b.view(1, -1, 1, 1), 2), 0.1),
                 "triton": lambda y, b: shuffle_nhwc(y, b)}
        out.append(("shuffle_nhwc", f"256->64ch x2 {h}x{w}", str((1, 256, h, w)), make, impls,
                    common.nbytes(y, b, y)))
    return out


if __name__ == "__main__":
    common.fast_op_main(__doc__, cases)
