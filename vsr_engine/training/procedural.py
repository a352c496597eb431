"""Procedural clips for data-free distillation: a moving dead-leaves world, rendered at HR and BI-downscaled.

The dead-leaves model (occluding shapes with a power-law size distribution) has the edge, occlusion and scale
statistics of natural images without being drawn from any image. Each clip is a stack of leaves (disks and
rotated rectangles, flat colour or a sinusoidal grating) in front of a background; every leaf moves with its own
velocity plus a shared camera pan, so the frames hold layered motion with occlusions, as real video does. Frames are
rendered at 4x the LR size and downscaled with MATLAB bicubic (``imresize``), the teacher's own BI degradation, so
the teacher sees LR frames of the kind it was trained on. No image or video is read.

``dead_leaves_clips(n, frames, size, generator)`` -> (n, frames, 3, size, size) float32 in [0, 1].
"""
from __future__ import annotations

import math

import torch

from ..imresize import imresize_torch


def _leaf_params(k: int, g: torch.Generator, span: float, r_min: float, r_max: float):
    u = torch.rand(k, generator=g)
    # radius density ~ r^-3 between r_min and r_max (scale invariance of the dead-leaves model)
    r = 1.0 / torch.sqrt(1.0 / r_min ** 2 - u * (1.0 / r_min ** 2 - 1.0 / r_max ** 2))
    centre = torch.rand(k, 2, generator=g) * span
    return r, centre


def render_leaves(n: int, frames: int, size: int, g: torch.Generator, leaves: int = 400, scale: int = 4,
                  max_motion: float = 2.0) -> torch.Tensor:
    """HR render: (n, frames, 3, size*scale, size*scale) in [0, 1]. ``max_motion`` is in LR pixels per frame."""
    hs = size * scale
    ys, xs = torch.meshgrid(torch.arange(hs, dtype=torch.float32) + 0.5,
                            torch.arange(hs, dtype=torch.float32) + 0.5, indexing="ij")
    out = torch.empty(n, frames, 3, hs, hs)
    c = (frames - 1) / 2
    vmax = max_motion * scale
    for i in range(n):
        r, centre = _leaf_params(leaves, g, float(hs), 0.02 * hs, 0.6 * hs)
        # the margin a leaf may travel in, so the field stays filled at every frame
        centre = centre * (1 + 2 * vmax * frames / hs) - vmax * frames
        colour = torch.rand(leaves, 3, generator=g)
        colour = colour ** (0.5 + torch.rand(leaves, 1, generator=g))          # some saturated, some pale
        rect = torch.rand(leaves, generator=g) < 0.5
        theta = torch.rand(leaves, generator=g) * math.pi
        aspect = 0.3 + 0.7 * torch.rand(leaves, generator=g)
        grating = torch.rand(leaves, generator=g) < 0.3
        freq = (0.05 + 0.45 * torch.rand(leaves, generator=g)) * scale / 4   # cycles per HR px: up to LR Nyquist
        phase = torch.rand(leaves, generator=g) * 2 * math.pi
        colour2 = torch.rand(leaves, 3, generator=g)
        pan = (torch.rand(2, generator=g) * 2 - 1) * vmax * 0.7
        vel = pan + (torch.rand(leaves, 2, generator=g) * 2 - 1) * vmax * 0.5
        bg = torch.rand(3, 1, 1, generator=g)
        cos, sin = torch.cos(theta), torch.sin(theta)
        for t in range(frames):
            img = bg.expand(3, hs, hs).clone()
            pos = centre + vel * (t - c)
            for k in range(leaves):            # back to front: a later leaf occludes the earlier ones
                ext = float(r[k])                  # the leaf lies inside the square of half-side r around it
                x0, x1 = max(int(pos[k, 0] - ext), 0), min(int(pos[k, 0] + ext) + 2, hs)
                y0, y1 = max(int(pos[k, 1] - ext), 0), min(int(pos[k, 1] + ext) + 2, hs)
                if x0 >= x1 or y0 >= y1:
                    continue
                dx, dy = xs[y0:y1, x0:x1] - pos[k, 0], ys[y0:y1, x0:x1] - pos[k, 1]
                u, v = dx * cos[k] + dy * sin[k], -dx * sin[k] + dy * cos[k]
                if rect[k]:
                    mask = (u.abs() < r[k] * 0.7071) & (v.abs() < r[k] * 0.7071 * aspect[k])
                else:
                    mask = u * u + (v / aspect[k]) ** 2 < r[k] * r[k]
                view = img[:, y0:y1, x0:x1]
                if grating[k]:
                    w = 0.5 + 0.5 * torch.sin(2 * math.pi * freq[k] * u + phase[k])
                    fill = colour[k].view(3, 1, 1) * w + colour2[k].view(3, 1, 1) * (1 - w)
                    view.copy_(torch.where(mask, fill, view))
                else:
                    view.copy_(torch.where(mask, colour[k].view(3, 1, 1), view))
            out[i, t] = img
    return out


def dead_leaves_clips(n: int, frames: int, size: int, generator: torch.Generator, leaves: int = 400,
                      max_motion: float = 2.0) -> torch.Tensor:
    """LR clips: HR dead-leaves renders downscaled x4 with MATLAB bicubic. (n, frames, 3, size, size)."""
    hr = render_leaves(n, frames, size, generator, leaves, 4, max_motion)
    lr = imresize_torch(hr.flatten(0, 1), size, size).clamp(0, 1)
    return lr.view(n, frames, 3, size, size)


class LeafPool:
    """A pool of dead-leaves LR clips, so the renderer's cost is spread over many student steps: ``sample`` draws
    ``batch`` clips (random ``size`` crop, flips, time reversal) and re-renders one pooled clip every
    ``refresh_every`` calls. Deterministic given ``generator``.

    With ``target`` (a function from LR clips (N, T, 3, h, w) to their x4 outputs), the pool also keeps each clip's
    target, computed once when the clip is rendered, on the whole uncropped clip; ``sample`` then returns
    ``(lr, hr)`` with the HR crop, flips and time order matching the LR's. ``distill --cache-teacher``: the teacher
    runs once per pooled clip instead of once per sampled crop."""

    def __init__(self, clips: int, frames: int, size: int, generator: torch.Generator, margin: int = 8,
                 refresh_every: int = 2, max_motion: float = 2.0, target=None, scale: int = 4):
        self.frames, self.size, self.g, self.refresh_every = frames, size, generator, refresh_every
        self.full, self.max_motion, self.calls = size + margin, max_motion, 0
        self.target, self.scale = target, scale
        self.pool = dead_leaves_clips(clips, frames, self.full, generator, max_motion=max_motion)
        self.targets = None   # computed at the first sample (so a caller may set ``target`` after construction)

    def sample(self, batch: int):
        g = self.g
        if self.target is not None and self.targets is None:
            self.targets = torch.cat([self.target(self.pool[i:i + 8]) for i in range(0, len(self.pool), 8)])
        self.calls += 1
        if self.calls % self.refresh_every == 0:
            j = int(torch.randint(len(self.pool), (1,), generator=g))
            self.pool[j] = dead_leaves_clips(1, self.frames, self.full, g, max_motion=self.max_motion)[0]
            if self.targets is not None:
                self.targets[j] = self.target(self.pool[j:j + 1])[0]
        out, hrs, r = [], [], self.scale
        for _ in range(batch):
            j = int(torch.randint(len(self.pool), (1,), generator=g))
            y, x = (int(v) for v in torch.randint(self.full - self.size + 1, (2,), generator=g))
            c = self.pool[j, :, :, y:y + self.size, x:x + self.size]
            h = None if self.targets is None else \
                self.targets[j, :, :, r * y:r * (y + self.size), r * x:r * (x + self.size)]
            flips = torch.rand(3, generator=g) < 0.5
            for flip, dim in zip(flips, (-1, -2, 0)):
                if flip:
                    c = c.flip(dim)
                    h = None if h is None else h.flip(dim)
            out.append(c)
            hrs.append(h)
        lr = torch.stack(out).contiguous()
        return lr if self.target is None else (lr, torch.stack(hrs).contiguous())
