#!/usr/bin/env python3
"""warp_nhwc microbenchmark: the propagation warp of a 64-channel channels-last feature by an fp32 flow at 180x320
and 540x960; eager PyTorch (flow_warp's grid_sample reference) vs the channels-last triton kernel.

    python bench/bench_warp_nhwc.py [--dtype fp16|bf16|fp32] [--dry-run]
Rows go to bench/results/ops.csv (see bench/common.py). Refuses to run without a CUDA device.
"""
import torch

import common
from vsr_engine.ops.warp_nhwc import warp_nhwc, warp_nhwc_ref

CL = torch.channels_last


def cases(dev, dtype, dry):
    out = []
    for h, w in ([(9, 11)] if dry else [(180, 320), (540, 960)]):
        def make(h=h, w=w):
            x = torch.randn(1, 64, h, w, device=dev, dtype=dtype).contiguous(memory_format=CL)
            return x, torch.randn(1, 2, h, w, device=dev) * 3
        x, f = make()
        impls = {"eager": lambda x, f: warp_nhwc_ref(x, f), "triton": lambda x, f: warp_nhwc(x, f)}
        out.append(("warp_nhwc", f"64ch {h}x{w}", str((1, 64, h, w)), make, impls, common.nbytes(x, f, x)))
    return out


if __name__ == "__main__":
    common.fast_op_main(__doc__, cases)
