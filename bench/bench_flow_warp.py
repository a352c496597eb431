#!/usr/bin/env python3
"""flow_warp microbenchmark: eager PyTorch (BasicSR's flow_warp: grid in the feature dtype + grid_sample) vs
torch.compile of it vs vsr_engine triton / cuda, 64 channels at 180x320 and 540x960 (one frame, as the
BasicVSR propagation calls it), flow (N, H, W, 2) permuted from (N, 2, H, W) like the models pass it.

    python bench/bench_flow_warp.py [--dtype fp16|bf16|fp32] [--backward] [--dry-run]
Rows go to bench/results/ops.csv (see bench/common.py). Refuses to run without a CUDA device.
"""
import torch
import torch.nn.functional as F

import common
from vsr_engine import ops


def official_flow_warp(x, flow, padding_mode="zeros"):
    _, _, h, w = x.shape
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    vx = 2.0 * (gx + flow[..., 0]) / max(w - 1, 1) - 1.0
    vy = 2.0 * (gy + flow[..., 1]) / max(h - 1, 1) - 1.0
    return F.grid_sample(x, torch.stack((vx, vy), 3), padding_mode=padding_mode, align_corners=True)


def main(argv=None):
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    dev = common.require_gpu(args)
    env = common.env_info(dev)
    dtype = common.DTYPES[args.dtype]
    cases = [("64ch_180x320", (1, 64, 180, 320)), ("64ch_540x960", (1, 64, 540, 960))]
    if args.dry_run:
        cases = [("dry_4ch_9x11", (1, 4, 9, 11))]
    rows = []
    for name, (n, c, h, w) in cases:
        def make(n=n, c=c, h=h, w=w):
            x = torch.randn(n, c, h, w, device=dev, dtype=dtype)
            flow = (torch.randn(n, 2, h, w, device=dev) * 4).to(dtype).permute(0, 2, 3, 1)
            return x, flow
        x, flow = make()
        rows += common.run_case("flow_warp", name, f"x{tuple(x.shape)} flow{tuple(flow.shape)}", dtype, make,
                                official_flow_warp, ops.flow_warp, common.nbytes(x, flow, x), args, dev, env,
                                notes="eager = BasicSR flow_warp (grid in feature dtype)", grad_inputs=(0, 1))
    common.write_rows(rows, args)


if __name__ == "__main__":
    main()
