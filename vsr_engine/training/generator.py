"""The clip generator of data-free distillation: noise -> a short low-resolution clip with motion.

One frame is synthesised from a latent vector on a canvas a little larger than the clip (upsampling convolutions
with instance norm, as the generators of data-free distillation are built), then every frame of the clip is that
canvas warped by a smooth random motion field scaled by its distance in time from the centre frame, and cropped
to the clip size. So the teacher's optical flow sees real, smooth motion; the margin keeps the warp's zero
padding out of the crop. Output in [0, 1], (N, T, 3, size, size).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ClipGenerator(nn.Module):
    def __init__(self, latent: int = 128, size: int = 32, frames: int = 5, max_motion: float = 1.5, width: int = 64):
        super().__init__()
        self.latent, self.size, self.frames, self.max_motion = latent, size, frames, float(max_motion)
        margin = int(math.ceil(self.max_motion * (frames - 1) / 2)) + 1
        self.canvas = 4 * int(math.ceil((size + 2 * margin) / 4))
        s0 = self.canvas // 4
        self.fc = nn.Linear(latent, width * 2 * s0 * s0)
        self.body = nn.Sequential(
            nn.InstanceNorm2d(width * 2, affine=True),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width * 2, width * 2, 3, 1, 1), nn.InstanceNorm2d(width * 2, affine=True), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(width * 2, width, 3, 1, 1), nn.InstanceNorm2d(width, affine=True), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 3, 3, 1, 1))
        self.width, self.s0 = width, s0

    def frame(self, z: torch.Tensor) -> torch.Tensor:
        """(N, latent) -> (N, 3, canvas, canvas) in [0, 1]."""
        x = self.fc(z).view(z.shape[0], self.width * 2, self.s0, self.s0)
        return torch.sigmoid(self.body(x))

    def motion(self, n: int, device, generator=None) -> torch.Tensor:
        """(N, 2, canvas, canvas) per-frame displacement in pixels: a global velocity plus a smooth local field
        (bicubic upsampling of a 3x3 random grid), at most ``max_motion`` px per frame on each axis."""
        g = torch.rand(n, 2, 1, 1, generator=generator) * 2 - 1
        local = torch.rand(n, 2, 3, 3, generator=generator) * 2 - 1
        local = F.interpolate(local, size=(self.canvas, self.canvas), mode="bicubic", align_corners=True)
        v = (0.6 * g + 0.4 * local.clamp(-1, 1)) * self.max_motion
        return v.to(device)

    def forward(self, z: torch.Tensor, velocity: torch.Tensor) -> torch.Tensor:
        from .. import ops
        base = self.frame(z)
        m = (self.canvas - self.size) // 2
        outs = []
        c = (self.frames - 1) / 2
        for t in range(self.frames):
            flow = (velocity.to(base.dtype) * (t - c)).permute(0, 2, 3, 1)
            f = base if t == c else ops.flow_warp(base, flow)
            outs.append(f[..., m:m + self.size, m:m + self.size])
        return torch.stack(outs, 1)
