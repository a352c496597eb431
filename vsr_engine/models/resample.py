"""Any output scale for the fixed-x4 models: their x4 output resampled on the device to floor(r*h) x floor(r*w).

The resample is MATLAB ``imresize(y4, output_shape=(floor(r*h), floor(r*w)), 'bicubic')`` on float tensors
(``imresize.imresize_torch``: antialiased when shrinking, symmetric borders, per-dimension scale = out/in, as
MATLAB does for an output size). At r = 4 it is the identity, so ``scale=4`` is the official model unchanged.
``ResampledBasicVSR`` overrides only ``upsample`` (one frame's reconstruction), so the streaming engine's split mode
(exact forward-state carry) runs it as it runs BasicVSR.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..imresize import imresize_torch
from ..ops.meta_upscale import meta_out_size
from .basicvsr import BasicVSR
from .realbasicvsr import RealBasicVSR

MAX_SCALE = 16.0


def check_any_scale(scale, who: str = "model") -> float:
    """r as a float, or ValueError: any 1 <= r <= 16 (non-integers too)."""
    try:
        r = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"{who} scale must be a number >= 1, got {scale!r}") from None
    if math.isnan(r) or not (1.0 <= r <= MAX_SCALE):
        raise ValueError(f"{who} scale {scale} is outside [1, {MAX_SCALE:g}]")
    return r


def resample_x4(y4: torch.Tensor, lr_hw: Tuple[int, int], scale: float) -> torch.Tensor:
    """(..., 4h, 4w) x4 output of an (h, w) input -> (..., floor(r*h), floor(r*w)); identity at r = 4.

    The resize factor is r/4 itself, not the size ratio floor(r*h)/(4h): output pixel i sits at LR coordinate
    (i + 0.5)/r - 0.5, the geometry of an LR made by ``imresize(hr, 1/r)``. With the size ratio instead, every
    r*h that is not an integer shifted the output by up to a pixel at the far edge (-4.3 dB on such windows).
    """
    oh, ow = meta_out_size(lr_hw[0], lr_hw[1], scale)
    if (oh, ow) == tuple(y4.shape[-2:]):
        return y4
    return imresize_torch(y4, oh, ow, float(scale) / 4.0)


class ResampledBasicVSR(BasicVSR):
    """BasicVSR x4 whose every output frame is resampled to scale r (``resample_x4``)."""

    def __init__(self, num_feat: int = 64, num_block: int = 30, scale: float = 4.0):
        super().__init__(num_feat, num_block)
        self.scale = check_any_scale(scale, "basicvsr")

    def output_size(self, h: int, w: int, scale: Optional[float] = None) -> Tuple[int, int]:
        return meta_out_size(h, w, self.scale if scale is None else float(scale))

    def upsample(self, lq: torch.Tensor, feat_b: torch.Tensor, feat_f: torch.Tensor) -> torch.Tensor:
        return resample_x4(super().upsample(lq, feat_b, feat_f), lq.shape[-2:], self.scale)

    def forward(self, lqs: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
        """``scale`` overrides the model's scale for this call."""
        if scale is None:
            return super().forward(lqs)
        old, self.scale = self.scale, check_any_scale(scale, "basicvsr")
        try:
            return super().forward(lqs)
        finally:
            self.scale = old


class ResampledRealBasicVSR(RealBasicVSR):
    """RealBasicVSR with its BasicVSR replaced by ``ResampledBasicVSR`` (same parameters, same names)."""

    def __init__(self, num_feat: int = 64, num_propagation_blocks: int = 20, num_cleaning_blocks: int = 20,
                 dynamic_refine_thres: float = 255.0, scale: float = 4.0):
        super().__init__(num_feat, num_propagation_blocks, num_cleaning_blocks, dynamic_refine_thres)
        self.basicvsr = ResampledBasicVSR(num_feat, num_propagation_blocks, scale)

    @property
    def scale(self) -> float:   # one value, kept by the inner BasicVSR (the Engine's split mode runs that one)
        return self.basicvsr.scale

    @scale.setter
    def scale(self, r) -> None:
        self.basicvsr.scale = check_any_scale(r, "realbasicvsr")

    def output_size(self, h: int, w: int, scale: Optional[float] = None) -> Tuple[int, int]:
        return self.basicvsr.output_size(h, w, scale)

    def forward(self, lqs: torch.Tensor, return_lqs: bool = False, scale: Optional[float] = None):
        if scale is None:
            return super().forward(lqs, return_lqs)
        old, self.basicvsr.scale = self.basicvsr.scale, check_any_scale(scale, "realbasicvsr")
        try:
            return super().forward(lqs, return_lqs)
        finally:
            self.basicvsr.scale = old
