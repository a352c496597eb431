"""basicvsr-meta: official BasicVSR (Vimeo-90K BI x4, frozen) with a Meta-SR scale head, any output scale r.

    out(r) = resample_x4(BasicVSR_x4(lqs), r) + ScaleHead(fused feature, r)

- The backbone is the official network and weights, untouched: SPyNet, both propagation branches, the fusion
  and the x4 tail. ``resample_x4`` is the MATLAB-bicubic resize of the x4 frame to floor(r*h) x floor(r*w)
  (antialiased when shrinking), i.e. the "x4 + resize" baseline.
- ``ScaleHead``: conv 3x3 (64 -> ``mid``) + LeakyReLU on the fused LR feature, then ``ops.meta_upscale``
  (Meta-SR's weight prediction from (1/r, frac(i/r), frac(j/r)), a k x k neighbourhood) to an RGB residual.
  Its last layer starts at zero, so the untrained model *is* x4 + resize; training can only move it where the
  loss on real clips says so.
- At r >= 4 the head is not applied: at r = 4 the model is official BasicVSR exactly, above 4 it is x4 + bicubic
  enlargement (the head was trained on 1.1 <= r < 4).

Only the head trains (``vsr_engine.training.meta``); its fp16 weights ship in ``assets/basicvsr_meta_head.safetensors``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..ops.meta_upscale import meta_out_size
from .basicvsr import BasicVSR, _conv_nobias
from .resample import check_any_scale, resample_x4

HEAD_MAX_SCALE = 4.0   # the head is applied for r < 4 only


class ScaleHead(nn.Module):
    def __init__(self, num_feat: int = 64, mid: int = 32, hidden: int = 256, kernel_size: int = 3):
        super().__init__()
        self.mid, self.hidden, self.kernel_size = mid, hidden, kernel_size
        self.mlp_lowp = False   # the weight MLP in the autocast dtype (set by the CPU training plan)
        self.conv = nn.Conv2d(num_feat, mid, 3, 1, 1)
        self.fc1 = nn.Linear(3, hidden)
        self.fc2 = nn.Linear(hidden, kernel_size * kernel_size * mid * 3)
        with torch.no_grad():   # zero residual at the start: the untrained model is x4 + resize
            self.fc2.weight.zero_()
            self.fc2.bias.zero_()

    def forward(self, fused: torch.Tensor, scale: float) -> torch.Tensor:
        f = F.leaky_relu(self.conv(fused), 0.1)
        return ops.meta_upscale(f, scale, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                out_channels=3, kernel_size=self.kernel_size, mlp_lowp=self.mlp_lowp)


class BasicVSRMeta(BasicVSR):
    """forward(lqs, scale=None): (N, T, 3, h, w) RGB in [0, 1] -> (N, T, 3, floor(r*h), floor(r*w))."""

    def __init__(self, num_feat: int = 64, num_block: int = 30, scale: float = 4.0, head_mid: int = 32,
                 head_hidden: int = 256, head_kernel: int = 3):
        super().__init__(num_feat, num_block)
        self.scale = check_any_scale(scale, "basicvsr-meta")
        self.head = ScaleHead(num_feat, head_mid, head_hidden, head_kernel)

    def output_size(self, h: int, w: int, scale: Optional[float] = None) -> Tuple[int, int]:
        return meta_out_size(h, w, self.scale if scale is None else float(scale))

    def backbone_frame(self, lq: torch.Tensor, feat_b: torch.Tensor, feat_f: torch.Tensor):
        """(fused LR feature, official x4 output) of one frame -- BasicVSR.upsample, keeping the fused feature."""
        fused = F.leaky_relu(self.fusion(torch.cat([feat_b, feat_f], dim=1)), 0.1)
        out = ops.pixel_shuffle_lrelu(_conv_nobias(self.upconv1, fused), 2, self.upconv1.bias)
        out = ops.pixel_shuffle_lrelu(_conv_nobias(self.upconv2, out), 2, self.upconv2.bias)
        out = self.conv_last(F.leaky_relu(self.conv_hr(out), 0.1))
        return fused, out + F.interpolate(lq, scale_factor=4, mode="bilinear", align_corners=False)

    def head_output(self, lq_hw, fused: torch.Tensor, y4: torch.Tensor, scale: float) -> torch.Tensor:
        """The model's output from the cached backbone parts (used by training on cached features)."""
        base = resample_x4(y4, lq_hw, scale)
        if scale >= HEAD_MAX_SCALE:
            return base
        return base + self.head(fused, scale)

    def upsample(self, lq: torch.Tensor, feat_b: torch.Tensor, feat_f: torch.Tensor,
                 scale: Optional[float] = None) -> torch.Tensor:
        fused, y4 = self.backbone_frame(lq, feat_b, feat_f)
        return self.head_output(lq.shape[-2:], fused, y4, self.scale if scale is None else scale)

    def forward(self, lqs: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
        r = self.scale if scale is None else check_any_scale(scale, "basicvsr-meta")
        if r == self.scale:
            return super().forward(lqs)
        old, self.scale = self.scale, r
        try:
            return super().forward(lqs)
        finally:
            self.scale = old

    def head_state_dict(self):
        return {k: v for k, v in self.head.state_dict().items()}
