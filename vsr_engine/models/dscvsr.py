"""DSCVSR (Hong et al., KSEM 2024): lightweight arbitrary-scale video SR.

The paper's parts, in order (seed 004):
- **DSCB**, the dense depthwise-separable residual block: a residual dense block (Meta-RDN) whose every conv
  is a depthwise k x k + pointwise 1 x 1 pair (``ops.dwpw_conv2d``); L layers with growth G, local 1 x 1 fusion,
  residual add.
- **R_f**, the feature extractor: shallow conv, D DSCBs, global 1 x 1 fusion + depthwise-separable conv, global
  residual -- run on [aligned propagated feature, LR frame] at every step of a BasicVSR-style bidirectional
  propagation, with SPyNet flows and ``ops.flow_warp`` (BasicVSR's SpyNet is reused, not copied).
- **Information filling** (Eq. 4): on every other frame, the propagated feature h_{i+-1} and its aligned
  version are fused by R (a conv + residual blocks) before R_f.
- **Meta-upscale** (Meta-SR): weights predicted from (1/r, frac(i/r), frac(j/r)) once per distinct offset
  (``ops.meta_upscale``), for any scale r.

One addition to the paper, stated plainly: the output adds a MATLAB-bicubic (a = -0.5, no antialiasing when
enlarging, symmetric borders -- the same kernel as the project's ``imresize``) resize of the LR frame to the output
size, so the network learns a residual over bicubic (BasicVSR adds a bilinear one); the head starts near zero, so
an untrained model already gives bicubic quality and training on a CPU budget only has to improve on it.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ops
from ..imresize import imresize_torch
from ..ops.meta_upscale import meta_out_size
from .basicvsr import ResidualBlockNoBN, SpyNet, check_input


class DSConv(nn.Module):
    """Depthwise k x k then pointwise 1 x 1 (one fused op), optional ReLU."""

    def __init__(self, cin: int, cout: int, k: int = 3, relu: bool = False):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, k, 1, k // 2, groups=cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.dwpw_conv2d(x, self.dw.weight, self.dw.bias, self.pw.weight, self.pw.bias,
                               activation="relu" if self.relu else None)


class DSCB(nn.Module):
    """Dense depthwise-separable residual block: x + LFF(concat[x, l_1, ..., l_L])."""

    def __init__(self, channels: int, growth: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(DSConv(channels + i * growth, growth, relu=True) for i in range(layers))
        self.lff = nn.Conv2d(channels + layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = x
        for layer in self.layers:
            feats = torch.cat([feats, layer(feats)], dim=1)
        return x + self.lff(feats)


class FeatureExtractor(nn.Module):
    """R_f: Meta-RDN's feature extractor with DSCBs. Returns the output and each block's output (for distillation)."""

    def __init__(self, cin: int, channels: int, blocks: int, layers: int, growth: int):
        super().__init__()
        self.sfe1 = nn.Conv2d(cin, channels, 3, 1, 1)
        self.sfe2 = DSConv(channels, channels)
        self.blocks = nn.ModuleList(DSCB(channels, growth, layers) for _ in range(blocks))
        self.gff = nn.Sequential(nn.Conv2d(blocks * channels, channels, 1), DSConv(channels, channels))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        f1 = self.sfe1(x)
        h = self.sfe2(f1)
        outs = []
        for b in self.blocks:
            h = b(h)
            outs.append(h)
        return f1 + self.gff(torch.cat(outs, dim=1)), outs


class InfoFilling(nn.Module):
    """R: fuses the propagated feature with its aligned version (conv 2C -> C, LeakyReLU, residual blocks)."""

    def __init__(self, channels: int, num_blocks: int):
        super().__init__()
        self.fuse = nn.Conv2d(2 * channels, channels, 3, 1, 1)
        self.body = nn.Sequential(*[ResidualBlockNoBN(channels) for _ in range(num_blocks)])

    def forward(self, prop: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        return self.body(F.leaky_relu(self.fuse(torch.cat([prop, aligned], 1)), 0.1))


def bicubic_upscale(x: torch.Tensor, out_h: int, out_w: int, scale: float) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, out_h, out_w): MATLAB ``imresize(x, scale, 'bicubic')`` for scale >= 1, on floats
    (``imresize.imresize_torch``: out = A_y @ x @ A_x^T with the per-dimension weights of ``contributions``)."""
    return imresize_torch(x, out_h, out_w, scale)


class MetaUpscale(nn.Module):
    """Meta-SR's Pos2Weight MLP + per-pixel weighted k x k neighbourhood (``ops.meta_upscale``)."""

    def __init__(self, channels: int, out_channels: int = 3, kernel_size: int = 3, hidden: int = 256):
        super().__init__()
        self.out_channels, self.kernel_size = out_channels, kernel_size
        self.mlp_lowp = False   # the weight MLP in the autocast dtype (set by the CPU training plan)
        self.fc1 = nn.Linear(3, hidden)
        self.fc2 = nn.Linear(hidden, kernel_size * kernel_size * channels * out_channels)
        with torch.no_grad():  # start near a zero residual: the untrained model is bicubic
            self.fc2.weight.mul_(0.1)
            self.fc2.bias.zero_()

    def forward(self, feat: torch.Tensor, scale: float) -> torch.Tensor:
        return ops.meta_upscale(feat, scale, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                out_channels=self.out_channels, kernel_size=self.kernel_size, mlp_lowp=self.mlp_lowp)


class DSCVSR(nn.Module):
    """forward(lqs, scale=None): (N, T, 3, H, W) RGB in [0, 1] -> (N, T, 3, int(rH), int(rW)) (Meta-SR's size rule)."""

    def __init__(self, num_feat: int = 32, num_blocks: int = 4, num_layers: int = 4, growth: int = 16,
                 filling_blocks: int = 2, scale: float = 4.0):
        super().__init__()
        self.num_feat = num_feat
        self.scale = self.check_scale(scale)
        self.spynet = SpyNet()
        self.backward_rf = FeatureExtractor(num_feat + 3, num_feat, num_blocks, num_layers, growth)
        self.forward_rf = FeatureExtractor(num_feat + 3, num_feat, num_blocks, num_layers, growth)
        self.backward_fill = InfoFilling(num_feat, filling_blocks)
        self.forward_fill = InfoFilling(num_feat, filling_blocks)
        self.fusion = nn.Conv2d(2 * num_feat, num_feat, 3, 1, 1)
        self.upscale = MetaUpscale(num_feat)
        self.record_features = False      # keep per-frame branch features for distillation
        self.features: Dict[str, List[torch.Tensor]] = {}

    @staticmethod
    def check_scale(scale) -> float:
        """Any r in [1, 16]; the network itself runs at min(r, 4) (trained on 1.1 to 4.0), above 4 its x4 output
        is enlarged with the MATLAB bicubic (``models/resample.py``)."""
        from .resample import check_any_scale
        return check_any_scale(scale, "DSCVSR")

    def output_size(self, h: int, w: int, scale: Optional[float] = None) -> Tuple[int, int]:
        """(floor(r*h), floor(r*w)) -- Meta-SR's rule."""
        return meta_out_size(h, w, self.scale if scale is None else float(scale))

    def get_flows(self, lqs: torch.Tensor):
        n, t, c, h, w = lqs.shape
        if t == 1:
            return None, None
        x1, x2 = lqs[:, :-1].reshape(-1, c, h, w), lqs[:, 1:].reshape(-1, c, h, w)
        return (self.spynet(x2, x1).view(n, t - 1, 2, h, w), self.spynet(x1, x2).view(n, t - 1, 2, h, w))

    def step(self, lq: torch.Tensor, prev: Optional[torch.Tensor], flow: Optional[torch.Tensor],
             rf: FeatureExtractor, fill: InfoFilling, index: int):
        """One recurrence step at frame ``index``: align the previous feature with ``flow`` (N, 2, h, w), fill
        it on odd frames (Eq. 4), then R_f on [feature, LR frame]. Returns (feature, block outputs)."""
        if prev is None:
            feat = lq.new_zeros(lq.shape[0], self.num_feat, *lq.shape[-2:])
        else:
            aligned = ops.flow_warp(prev, flow.permute(0, 2, 3, 1))
            feat = fill(prev, aligned) if index % 2 == 1 else aligned  # information filling, every other frame
        return rf(torch.cat([feat, lq], dim=1))

    def propagate(self, lqs, flows, rf: FeatureExtractor, fill: InfoFilling, backward: bool, first_index: int = 0):
        """One branch over the clip; ``first_index`` is the absolute index of ``lqs[:, 0]`` (filling parity)."""
        t = lqs.shape[1]
        feat = None
        out: List[Optional[torch.Tensor]] = [None] * t
        blocks: List[Optional[List[torch.Tensor]]] = [None] * t
        order = range(t - 1, -1, -1) if backward else range(t)
        for k, i in enumerate(order):
            flow = None if k == 0 else (flows[:, i] if backward else flows[:, i - 1])
            feat, blocks[i] = self.step(lqs[:, i], feat, flow, rf, fill, first_index + i)
            out[i] = feat
        return out, blocks

    def reconstruct(self, lq: torch.Tensor, feat_b: torch.Tensor, feat_f: torch.Tensor, scale: float) -> torch.Tensor:
        """Fuse both branches and meta-upscale one frame, plus the bicubic base: (N, 3, floor(rh), floor(rw))."""
        if scale > 4.0:
            from .resample import resample_x4
            return resample_x4(self.reconstruct(lq, feat_b, feat_f, 4.0), lq.shape[-2:], scale)
        oh, ow = meta_out_size(lq.shape[-2], lq.shape[-1], scale)
        feat = F.leaky_relu(self.fusion(torch.cat([feat_b, feat_f], 1)), 0.1)
        return self.upscale(feat, scale) + bicubic_upscale(lq, oh, ow, scale)

    def forward(self, lqs: torch.Tensor, scale: Optional[float] = None) -> torch.Tensor:
        check_input(lqs)
        r = self.scale if scale is None else self.check_scale(scale)
        flows_f, flows_b = self.get_flows(lqs)
        fb, blocks_b = self.propagate(lqs, flows_b, self.backward_rf, self.backward_fill, backward=True)
        ff, blocks_f = self.propagate(lqs, flows_f, self.forward_rf, self.forward_fill, backward=False)
        if self.record_features:
            self.features = {"backward": fb, "forward": ff, "backward_blocks": blocks_b, "forward_blocks": blocks_f}
        # every frame reconstructed in one call (frames into the batch): the same per-frame arithmetic, and the
        # Meta-Upscale's weight MLP, its tables and weight layouts computed once per clip instead of once per frame
        n, t = lqs.shape[:2]
        out = self.reconstruct(lqs.flatten(0, 1), torch.stack(fb, 1).flatten(0, 1), torch.stack(ff, 1).flatten(0, 1),
                               r)
        return out.unflatten(0, (n, t))
