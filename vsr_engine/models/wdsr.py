"""WDSR-A (wide activation SR), as configured in the STDO code (``models/wdsr.py`` of coulsonlee/STDO-CVPR2023,
itself the ``ychfan/wdsr`` model).

Network (defaults = the STDO repo defaults):

- input RGB in [0, 1]; ``image_mean`` (0.5) is subtracted first and added back at the end;
- body: 3x3 conv 3 -> n (n = ``num_residual_units`` = 32); ``num_blocks`` (16) blocks of
  [3x3 conv n -> n*w, ReLU, 3x3 conv n*w -> n] + identity (w = ``width_multiplier`` = 4); 3x3 conv n -> 3 s^2;
- skip: one 5x5 conv 3 -> 3 s^2 on the (mean-subtracted) input, added to the body output;
- pixel shuffle by s (``vsr_engine.ops.pixel_shuffle``).

Every conv is weight-normalised: ``weight = g * v / ||v||`` with the norm over (in, kh, kw) per output channel.
:class:`WNConv2d` keeps the parameters under the names ``torch.nn.utils.weight_norm`` uses (``weight_g``,
shape (out, 1, 1, 1), and ``weight_v``), so state dicts have the same keys as the official checkpoints
(``body.0.weight_g``, ``body.1.body.0.weight_v``, ``skip.0.bias``, ...). Initialisation follows the official
code: g = 1 for head/tail/skip, g = 2 for the first conv of a block, g = 1/sqrt(num_blocks) for the second,
biases 0. :func:`fold_weight_norm` turns the module into plain convs (same function) for inference.
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import pixel_shuffle


class WNConv2d(nn.Module):
    """Conv2d with weight normalisation (``weight_g`` / ``weight_v`` parameters, as torch.nn.utils.weight_norm)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, g_init: float = 1.0, bias: bool = True):
        super().__init__()
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.padding = kernel_size // 2
        ref = nn.Conv2d(in_ch, out_ch, kernel_size, padding=self.padding, bias=bias)  # default (kaiming) init of v
        self.weight_v = nn.Parameter(ref.weight.detach().clone())
        self.weight_g = nn.Parameter(torch.full((out_ch, 1, 1, 1), float(g_init)))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.folded = False

    def weight(self) -> torch.Tensor:
        if self.folded:
            return self.weight_folded
        v = self.weight_v
        return v * (self.weight_g / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1))

    def forward(self, x):
        return F.conv2d(x, self.weight(), self.bias, padding=self.padding)

    @torch.no_grad()
    def fold(self):
        """Replace (g, v) by the plain weight ``weight_folded`` (inference only: the state dict keys change)."""
        if not self.folded:
            self.weight_folded = nn.Parameter(self.weight().detach().clone(), requires_grad=False)
            del self.weight_g, self.weight_v
            self.folded = True
        return self

    def extra_repr(self):
        return f"{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, folded={self.folded}"


class Block(nn.Module):
    def __init__(self, n: int, width_multiplier: float, res_scale: float):
        super().__init__()
        mid = int(n * width_multiplier)
        self.body = nn.Sequential(WNConv2d(n, mid, 3, g_init=2.0), nn.ReLU(inplace=True),
                                  WNConv2d(mid, n, 3, g_init=res_scale))

    def forward(self, x):
        return self.body(x) + x


class WDSR(nn.Module):
    def __init__(self, scale: int = 4, num_blocks: int = 16, num_residual_units: int = 32,
                 width_multiplier: float = 4, num_channels: int = 3, image_mean: float = 0.5):
        super().__init__()
        self.scale, self.image_mean = int(scale), float(image_mean)
        self.config = dict(scale=int(scale), num_blocks=int(num_blocks), num_residual_units=int(num_residual_units),
                           width_multiplier=float(width_multiplier), num_channels=int(num_channels),
                           image_mean=float(image_mean))
        n_out = num_channels * scale * scale
        body = [WNConv2d(num_channels, num_residual_units, 3)]
        body += [Block(num_residual_units, width_multiplier, 1 / math.sqrt(num_blocks)) for _ in range(num_blocks)]
        body.append(WNConv2d(num_residual_units, n_out, 3))
        self.body = nn.Sequential(*body)
        self.skip = nn.Sequential(WNConv2d(num_channels, n_out, 5)) if num_channels != n_out else nn.Sequential()

    def forward(self, x):
        x = x - self.image_mean
        x = self.body(x) + self.skip(x)
        return pixel_shuffle(x, self.scale) + self.image_mean


@torch.no_grad()
def bicubic_skip_(model: "WDSR", tail_gain: Optional[float] = 0.1) -> "WDSR":
    """Set the 5x5 skip conv to MATLAB-bicubic upsampling by ``scale`` (per colour channel, pixel-shuffle
    phase order) and zero its bias, so the network starts as bicubic + body residual (body output is added).

    Not in the official code (which initialises g = 1 and v at random); it makes short per-video fits start at
    bicubic quality. 5 taps cover every phase of the bicubic kernel for scales 2, 3 and 4. ``tail_gain``
    (if not None) also sets g of the body's last conv, so the random body adds only a small residual at first.
    """
    from ..imresize import contributions
    s = model.scale
    conv = model.skip[0]
    c = model.config["num_channels"]
    n = 64
    w, idx = contributions(n, n * s, float(s), antialias=True)
    centre = n // 2
    k1 = torch.zeros(s, 5, dtype=torch.float64)
    for p in range(s):
        u = centre * s + p
        for wt, i in zip(w[u], idx[u]):
            off = int(i) - centre + 2
            if wt != 0:
                if not 0 <= off < 5:
                    raise AssertionError("bicubic tap outside the 5x5 skip kernel")
                k1[p, off] += float(wt)
    v = torch.zeros_like(conv.weight_v, dtype=torch.float64)
    for ch in range(c):
        for py in range(s):
            for px in range(s):
                v[ch * s * s + py * s + px, ch] = torch.outer(k1[py], k1[px])
    conv.weight_v.copy_(v.to(conv.weight_v.dtype))
    conv.weight_g.copy_(v.flatten(1).norm(dim=1).view(-1, 1, 1, 1).to(conv.weight_g.dtype))
    conv.bias.zero_()
    if tail_gain is not None:
        model.body[-1].weight_g.fill_(float(tail_gain))
    return model


def fold_weight_norm(model: nn.Module) -> nn.Module:
    """Fold every :class:`WNConv2d` of ``model`` into a plain weight (in place; returns the model)."""
    for m in model.modules():
        if isinstance(m, WNConv2d):
            m.fold()
    return model


def wdsr_macs_per_lr_pixel(num_blocks=16, num_residual_units=32, width_multiplier=4, scale=4, num_channels=3) -> int:
    n, mid, c, o = num_residual_units, int(num_residual_units * width_multiplier), num_channels, num_channels * scale ** 2
    return 9 * c * n + num_blocks * 2 * 9 * n * mid + 9 * n * o + 25 * c * o


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p is not None)


def state_dict_shapes(model: nn.Module) -> Dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
