#!/usr/bin/env python3
"""bias_act microbenchmark: the residual block's epilogue (y + bias + residual, channels-last, 64 channels) at
180x320 and 540x960; eager PyTorch (broadcast bias add, then the residual add) vs the one-pass triton kernel.

    python bench/bench_bias_act.py [--dtype fp16|bf16|fp32] [--dry-run]
Rows go to bench/results/ops.csv (see bench/common.py). Refuses to run without a CUDA device.
"""
import torch

import common
from vsr_engine.ops.bias_act import bias_act

CL = torch.channels_last


def cases(dev, dtype, dry):
    out = []
    for h, w in ([(9, 11)] if dry else [(180, 320), (540, 960)]):
        def make(h=h, w=w):
            y = torch.randn(1, 64, h, w, device=dev, dtype=dtype).contiguous(memory_format=CL)
            return y, torch.randn(64, device=dev, dtype=dtype), torch.randn_like(y)
        y, b, z = make()
        impls = {"eager": lambda y, b, z: (y + b.view(1, -1, 1, 1)) + z,
                 "triton": lambda y, b, z: bias_act(y, b, "none", z=z)}
        out.append(("bias_act", f"64ch residual {h}x{w}", str((1, 64, h, w)), make, impls,
                    common.nbytes(y, b, z, y)))
    return out


if __name__ == "__main__":
    common.fast_op_main(__doc__, cases)
