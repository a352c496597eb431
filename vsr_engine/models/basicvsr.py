"""BasicVSR (Chan et al., CVPR 2021): bidirectional recurrent propagation with SPyNet flow alignment.

Same function as BasicSR's ``BasicVSR(num_feat=64, num_block=30)`` and mmagic's ``BasicVSRNet``. Parameter
names follow BasicSR; mmagic-named checkpoints are renamed on load (``vsr_engine.checkpoint``).
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops


class ResidualBlockNoBN(nn.Module):
    """conv3x3 -> ReLU -> conv3x3, plus identity (res_scale 1)."""

    def __init__(self, num_feat: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ConvResidualBlocks(nn.Module):
    """conv3x3 (in -> feat) -> LeakyReLU(0.1) -> ``num_block`` residual blocks.
    (BasicSR ``ConvResidualBlocks`` == mmagic ``ResidualBlocksWithInputConv``.)"""

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, num_block: int = 15):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Sequential(*[ResidualBlockNoBN(num_feat) for _ in range(num_block)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class SpyNetBasicModule(nn.Module):
    """Five 7x7 convs 8-32-64-32-16-2, ReLU between: predicts a flow residual at one pyramid level."""

    def __init__(self):
        super().__init__()
        chans = [8, 32, 64, 32, 16, 2]
        layers: List[nn.Module] = []
        for i in range(5):
            layers.append(nn.Conv2d(chans[i], chans[i + 1], 7, 1, 3))
            if i < 4:
                layers.append(nn.ReLU(inplace=False))
        self.basic_module = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.basic_module(x)


class SpyNet(nn.Module):
    """SPyNet (Ranjan & Black, CVPR 2017): coarse-to-fine flow over a 6-level average-pool pyramid."""

    def __init__(self):
        super().__init__()
        self.basic_module = nn.ModuleList([SpyNetBasicModule() for _ in range(6)])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def compute_flow(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Flow from ``ref`` to ``supp`` for sizes that are multiples of 32."""
        ref_pyr = [(ref - self.mean) / self.std]
        supp_pyr = [(supp - self.mean) / self.std]
        for _ in range(5):
            ref_pyr.insert(0, F.avg_pool2d(ref_pyr[0], 2, 2, count_include_pad=False))
            supp_pyr.insert(0, F.avg_pool2d(supp_pyr[0], 2, 2, count_include_pad=False))
        n, _, h, w = ref_pyr[0].shape
        flow = ref.new_zeros(n, 2, h, w)
        for level, (r, s) in enumerate(zip(ref_pyr, supp_pyr)):
            if level == 0:
                flow_up = flow
            else:
                flow_up = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            warped = ops.flow_warp(s, flow_up.permute(0, 2, 3, 1), padding_mode="border")
            flow = flow_up + self.basic_module[level](torch.cat([r, warped, flow_up], 1))
        return flow

    def forward(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Flow (N, 2, H, W) in pixels, channel 0 = dx, 1 = dy, that warps ``supp`` onto ``ref``."""
        h, w = ref.shape[-2:]
        h_up, w_up = 32 * math.ceil(h / 32), 32 * math.ceil(w / 32)
        ref = F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False)
        supp = F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False)
        flow = F.interpolate(self.compute_flow(ref, supp), size=(h, w), mode="bilinear", align_corners=False)
        scale = flow.new_tensor([w / w_up, h / h_up]).view(1, 2, 1, 1)
        return flow * scale


class BasicVSR(nn.Module):
    """BasicVSR x4.

    forward(lqs): (N, T, 3, H, W) RGB in [0, 1] -> (N, T, 3, 4H, 4W), not clamped.
    """

    scale = 4

    def __init__(self, num_feat: int = 64, num_block: int = 30):
        super().__init__()
        self.num_feat = num_feat
        self.num_block = num_block
        # alignment
        self.spynet = SpyNet()
        # propagation
        self.backward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        self.forward_trunk = ConvResidualBlocks(num_feat + 3, num_feat, num_block)
        # reconstruction
        self.fusion = nn.Conv2d(num_feat * 2, num_feat, 1, 1, 0)
        self.upconv1 = nn.Conv2d(num_feat, num_feat * 4, 3, 1, 1)
        self.upconv2 = nn.Conv2d(num_feat, 64 * 4, 3, 1, 1)
        self.conv_hr = nn.Conv2d(64, 64, 3, 1, 1)
        self.conv_last = nn.Conv2d(64, 3, 3, 1, 1)

    # -- alignment -------------------------------------------------------------------------------
    def get_flows(self, lqs: torch.Tensor) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        """flows_backward[:, i] = SPyNet(x_i, x_{i+1}); flows_forward[:, i] = SPyNet(x_{i+1}, x_i)."""
        n, t, c, h, w = lqs.shape
        if t == 1:
            return None, None
        x1 = lqs[:, :-1].reshape(-1, c, h, w)
        x2 = lqs[:, 1:].reshape(-1, c, h, w)
        flows_backward = self.spynet(x1, x2).view(n, t - 1, 2, h, w)
        flows_forward = self.spynet(x2, x1).view(n, t - 1, 2, h, w)
        return flows_forward, flows_backward

    # -- propagation -----------------------------------------------------------------------------
    def propagate(self, lqs: torch.Tensor, flows: Optional[torch.Tensor], trunk: nn.Module,
                  backward: bool, feat: Optional[torch.Tensor] = None) -> List[torch.Tensor]:
        """One recurrent branch; returns the feature of every frame in input order.
        ``feat`` is an optional initial hidden state (zeros otherwise)."""
        n, t, _, h, w = lqs.shape
        if feat is None:
            feat = lqs.new_zeros(n, self.num_feat, h, w)
        order = range(t - 1, -1, -1) if backward else range(t)
        out: List[Optional[torch.Tensor]] = [None] * t
        for step, i in enumerate(order):
            if step > 0:
                flow = flows[:, i] if backward else flows[:, i - 1]
                feat = ops.flow_warp(feat, flow.permute(0, 2, 3, 1))
            feat = trunk(torch.cat([lqs[:, i], feat], dim=1))
            out[i] = feat
        return out  # type: ignore[return-value]

    # -- reconstruction --------------------------------------------------------------------------
    def upsample(self, lq: torch.Tensor, feat_b: torch.Tensor, feat_f: torch.Tensor) -> torch.Tensor:
        """Fuse the two branch features of one frame and reconstruct the x4 output."""
        out = F.leaky_relu(self.fusion(torch.cat([feat_b, feat_f], dim=1)), 0.1)
        out = ops.pixel_shuffle_lrelu(_conv_nobias(self.upconv1, out), 2, self.upconv1.bias)
        out = ops.pixel_shuffle_lrelu(_conv_nobias(self.upconv2, out), 2, self.upconv2.bias)
        out = F.leaky_relu(self.conv_hr(out), 0.1)
        out = self.conv_last(out)
        return out + F.interpolate(lq, scale_factor=4, mode="bilinear", align_corners=False)

    def forward(self, lqs: torch.Tensor) -> torch.Tensor:
        check_input(lqs)
        flows_forward, flows_backward = self.get_flows(lqs)
        feats_b = self.propagate(lqs, flows_backward, self.backward_trunk, backward=True)
        feats_f = self.propagate(lqs, flows_forward, self.forward_trunk, backward=False)
        outs = [self.upsample(lqs[:, i], feats_b[i], feats_f[i]) for i in range(lqs.shape[1])]
        return torch.stack(outs, dim=1)


def _conv_nobias(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The conv without its bias: the bias is fused into the pixel-shuffle + LeakyReLU epilogue."""
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding)


def check_input(lqs: torch.Tensor) -> None:
    if not isinstance(lqs, torch.Tensor) or lqs.dim() != 5 or lqs.shape[2] != 3:
        shape = tuple(lqs.shape) if isinstance(lqs, torch.Tensor) else type(lqs).__name__
        raise ValueError(f"expected lqs of shape (N, T, 3, H, W), got {shape}")
    if min(lqs.shape[0], lqs.shape[1], lqs.shape[3], lqs.shape[4]) < 1:
        raise ValueError(f"empty input {tuple(lqs.shape)}")
