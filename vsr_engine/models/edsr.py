"""EDSR (Lim et al. 2017), the "baseline" configuration: 16 residual blocks, 64 channels, res_scale 1.

Layout follows the EDSR-PyTorch code (and the STDO paper's "EDSR with 16 resblocks"):

- input RGB in [0, 1]; the DIV2K RGB mean (0.4488, 0.4371, 0.4040) is subtracted and added back at the end
  (EDSR's ``MeanShift`` with rgb_range 1, std 1);
- head: 3x3 conv 3 -> 64;
- body: 16 x [3x3 conv, ReLU, 3x3 conv] * res_scale + identity, then a 3x3 conv; plus the head output
  (global residual);
- tail: upsampler -- for s = 2^k, k x [3x3 conv 64 -> 256, pixel shuffle 2]; for s = 3, [3x3 conv 64 -> 576,
  pixel shuffle 3] -- then a 3x3 conv 64 -> 3. Pixel shuffles use ``vsr_engine.ops.pixel_shuffle``.

State dict keys: ``head.0``, ``body.{i}.body.{0,2}``, ``body.16``, ``tail.0.{j}`` (upsampler convs),
``tail.1`` -- the EDSR-PyTorch names, without its ``sub_mean``/``add_mean`` buffers.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..ops import pixel_shuffle

DIV2K_MEAN = (0.4488, 0.4371, 0.4040)


class ResBlock(nn.Module):
    def __init__(self, n: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n, n, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(n, n, 3, padding=1))
        self.res_scale = res_scale

    def forward(self, x):
        return self.body(x) * self.res_scale + x


class Upsampler(nn.Module):
    """Convs whose outputs go through ``vsr_engine.ops.pixel_shuffle`` (index j of conv = j-th stage)."""

    def __init__(self, scale: int, n: int):
        super().__init__()
        if scale & (scale - 1) == 0:
            stages = [2] * int(math.log2(scale))
        elif scale == 3:
            stages = [3]
        else:
            raise ValueError(f"EDSR upsampler: scale {scale} not supported (2^k or 3)")
        self.stages = stages
        self.convs = nn.ModuleList(nn.Conv2d(n, n * r * r, 3, padding=1) for r in stages)

    def forward(self, x):
        for conv, r in zip(self.convs, self.stages):
            x = pixel_shuffle(conv(x), r)
        return x


class EDSR(nn.Module):
    def __init__(self, scale: int = 4, num_blocks: int = 16, num_feats: int = 64, res_scale: float = 1.0,
                 num_channels: int = 3, rgb_mean=DIV2K_MEAN):
        super().__init__()
        self.scale = int(scale)
        self.config = dict(scale=int(scale), num_blocks=int(num_blocks), num_feats=int(num_feats),
                           res_scale=float(res_scale), num_channels=int(num_channels), rgb_mean=list(rgb_mean))
        self.register_buffer("mean", torch.tensor(rgb_mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.head = nn.Sequential(nn.Conv2d(num_channels, num_feats, 3, padding=1))
        self.body = nn.Sequential(*[ResBlock(num_feats, res_scale) for _ in range(num_blocks)],
                                  nn.Conv2d(num_feats, num_feats, 3, padding=1))
        self.tail = nn.Sequential(Upsampler(scale, num_feats), nn.Conv2d(num_feats, num_channels, 3, padding=1))

    def forward(self, x):
        x = self.head(x - self.mean)
        x = self.body(x) + x
        return self.tail(x) + self.mean


def edsr_macs_per_lr_pixel(num_blocks=16, num_feats=64, scale=4, num_channels=3) -> int:
    n = num_feats
    macs = 9 * num_channels * n + (2 * num_blocks + 1) * 9 * n * n
    area = 1
    stages = [2] * int(math.log2(scale)) if scale & (scale - 1) == 0 else [scale]
    for r in stages:
        macs += area * 9 * n * n * r * r
        area *= r * r
    return macs + area * 9 * n * num_channels
