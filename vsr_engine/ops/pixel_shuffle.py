"""pixel_shuffle: ``F.pixel_shuffle`` (out[c, h*r+i, w*r+j] = in[c*r*r + i*r + j, h, w]) and the fused
bias + LeakyReLU(0.1) + shuffle used by the BasicVSR tail."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def pixel_shuffle_ref(x: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    return F.pixel_shuffle(x, upscale_factor)


def pixel_shuffle_lrelu_ref(x: torch.Tensor, upscale_factor: int, bias: Optional[torch.Tensor] = None,
                            negative_slope: float = 0.1) -> torch.Tensor:
    """LeakyReLU(pixel_shuffle(x + bias)) -- bias is per input channel (the conv's bias)."""
    if bias is not None:
        x = x + bias.view(1, -1, 1, 1)
    return F.leaky_relu(F.pixel_shuffle(x, upscale_factor), negative_slope)


def pixel_shuffle(x: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    return pixel_shuffle_ref(x, upscale_factor)


def pixel_shuffle_lrelu(x: torch.Tensor, upscale_factor: int, bias: Optional[torch.Tensor] = None,
                        negative_slope: float = 0.1) -> torch.Tensor:
    return pixel_shuffle_lrelu_ref(x, upscale_factor, bias, negative_slope)
