"""Test-only reference for TDAN, written from the official code (YapengTian/TDAN-VSR-CVPR-2020 model.py, eval.py)
and independent of vsr_engine.models.tdan: official parameter names and module nesting, a deformable convolution
computed tap by tap in the input's dtype, the eval loop with its frame-index rule.

``deform_conv_ref(..., rule="torchvision")`` is the bilinear rule of torchvision.ops.deform_conv2d and mmcv v1
(zero outside the image: a sample is 0 when y <= -1, y >= H, x <= -1 or x >= W, and each of its 4 corners counts
only if it lies in the image). ``rule="msra"`` is the rule of the MSRA Deformable-ConvNets v1 im2col that the
official 1zb/deformable-convolution-pytorch extension (TDAN's ``ConvOffset2d``) uses: a sample is 0 unless
0 <= y < H and 0 <= x < W, and a sample in the last row/column band (y > H-1 or x > W-1) is clamped onto it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _bilinear(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor, rule: str) -> torch.Tensor:
    """img (N, C, H, W); y, x (N, P) pixel coordinates -> (N, C, P)."""
    n, c, h, w = img.shape
    flat = img.reshape(n, c, h * w)

    def at(yy, xx):
        ok = (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long()
        v = torch.gather(flat, 2, idx.unsqueeze(1).expand(n, c, idx.shape[1]))
        return v * ok.unsqueeze(1).to(img.dtype)

    if rule == "msra":
        inside = (y >= 0) & (x >= 0) & (y < h) & (x < w)
        y_lo, x_lo = torch.floor(y), torch.floor(x)
        y = torch.where(y_lo >= h - 1, torch.full_like(y, h - 1), y)
        x = torch.where(x_lo >= w - 1, torch.full_like(x, w - 1), x)
        y_lo = torch.where(y_lo >= h - 1, torch.full_like(y_lo, h - 1), y_lo)
        x_lo = torch.where(x_lo >= w - 1, torch.full_like(x_lo, w - 1), x_lo)
        y_hi = torch.where(y_lo >= h - 1, y_lo, y_lo + 1)
        x_hi = torch.where(x_lo >= w - 1, x_lo, x_lo + 1)
    else:
        inside = (y > -1) & (x > -1) & (y < h) & (x < w)
        y_lo, x_lo = torch.floor(y), torch.floor(x)
        y_hi, x_hi = y_lo + 1, x_lo + 1
    ly, lx = (y - y_lo).unsqueeze(1), (x - x_lo).unsqueeze(1)
    v = ((1 - ly) * (1 - lx) * at(y_lo, x_lo) + (1 - ly) * lx * at(y_lo, x_hi)
         + ly * (1 - lx) * at(y_hi, x_lo) + ly * lx * at(y_hi, x_hi))
    return v * inside.unsqueeze(1).to(img.dtype)


def deform_conv_ref(x, offset, weight, padding: int = 1, rule: str = "torchvision"):
    """Deformable conv v1 (stride 1, dilation 1, no bias), offsets (N, 2*G*kh*kw, H', W') as (dy, dx) pairs per
    group and tap (row-major taps)."""
    n, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    k = kh * kw
    g = offset.shape[1] // (2 * k)
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    oy, ox = torch.meshgrid(torch.arange(ho, dtype=x.dtype), torch.arange(wo, dtype=x.dtype), indexing="ij")
    out = x.new_zeros(n, cout, ho * wo)
    cg = c // g
    for gi in range(g):
        xs = x[:, gi * cg:(gi + 1) * cg]
        for t in range(k):
            i, j = divmod(t, kw)
            dy = offset[:, 2 * (gi * k + t)].reshape(n, -1)
            dx = offset[:, 2 * (gi * k + t) + 1].reshape(n, -1)
            y = (oy - padding + i).reshape(1, -1) + dy
            xx = (ox - padding + j).reshape(1, -1) + dx
            v = _bilinear(xs, y, xx, rule)                       # (N, cg, P)
            out += torch.einsum("oc,ncp->nop", weight[:, gi * cg:(gi + 1) * cg, i, j], v)
    return out.view(n, cout, ho, wo)


# ---- the official network, with its names ---------------------------------------------------------------
class ConvOffset2d(nn.Module):
    rule = "torchvision"

    def __init__(self, cin, cout, kernel_size, padding=1, num_deformable_groups=8):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(cout, cin, 3, 3).uniform_(-1 / math.sqrt(cin * 9), 1 / math.sqrt(cin * 9)))

    def forward(self, x, offset):
        return deform_conv_ref(x, offset, self.weight, 1, self.rule)


class Res_Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(64, 64, 3, 1, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(64, 64, 3, 1, 1, bias=True)

    def forward(self, x):
        return x + self.conv2(self.relu(self.conv1(x)))


class TDAN_VSR(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_first = nn.Conv2d(3, 64, 3, padding=1, bias=True)
        self.residual_layer = nn.Sequential(*[Res_Block() for _ in range(5)])
        self.relu = nn.ReLU(inplace=True)
        self.cr = nn.Conv2d(128, 64, 3, padding=1, bias=True)
        self.off2d_1 = nn.Conv2d(64, 18 * 8, 3, padding=1, bias=True)
        self.dconv_1 = ConvOffset2d(64, 64, 3, padding=1, num_deformable_groups=8)
        self.off2d_2 = nn.Conv2d(64, 18 * 8, 3, padding=1, bias=True)
        self.deconv_2 = ConvOffset2d(64, 64, 3, padding=1, num_deformable_groups=8)
        self.off2d_3 = nn.Conv2d(64, 18 * 8, 3, padding=1, bias=True)
        self.deconv_3 = ConvOffset2d(64, 64, 3, padding=1, num_deformable_groups=8)
        self.off2d = nn.Conv2d(64, 18 * 8, 3, padding=1, bias=True)
        self.dconv = ConvOffset2d(64, 64, (3, 3), padding=(1, 1), num_deformable_groups=8)
        self.recon_lr = nn.Conv2d(64, 3, 3, padding=1, bias=True)
        self.fea_ex = nn.Sequential(nn.Conv2d(5 * 3, 64, 3, padding=1, bias=True), nn.ReLU())
        self.recon_layer = nn.Sequential(*[Res_Block() for _ in range(10)])
        up = nn.Sequential(nn.Conv2d(64, 256, 3, padding=1), nn.PixelShuffle(2),
                           nn.Conv2d(64, 256, 3, padding=1), nn.PixelShuffle(2))
        self.up = nn.Sequential(up, nn.Conv2d(64, 3, 3, padding=1, bias=False))
        for m in self.modules():   # the official init: N(0, sqrt(2 / (k*k*out))) for every conv
            if isinstance(m, nn.Conv2d):
                m.weight.data.normal_(0, math.sqrt(2. / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))

    def align(self, x, x_center):
        y = []
        num = x.shape[1]
        center = num // 2
        ref = x[:, center]
        for i in range(num):
            if i == center:
                y.append(x_center.unsqueeze(1))
                continue
            supp = x[:, i]
            fea = self.cr(torch.cat([ref, supp], dim=1))
            fea = self.dconv_1(fea, self.off2d_1(fea))
            fea = self.deconv_2(fea, self.off2d_2(fea))
            fea = self.deconv_3(supp, self.off2d_3(fea))
            aligned_fea = self.dconv(fea, self.off2d(fea))
            y.append(self.recon_lr(aligned_fea).unsqueeze(1))
        return torch.cat(y, dim=1)

    def forward(self, x):
        b, num, ch, h, w = x.size()
        out = self.relu(self.conv_first(x.reshape(-1, ch, h, w)))
        out = self.residual_layer(out).view(b, num, -1, h, w)
        lrs = self.align(out, x[:, num // 2])
        fea = self.fea_ex(lrs.view(b, -1, h, w))
        return self.up(self.recon_layer(fea)), lrs


def official_index(j: int, num: int, rule: str):
    """eval.py's frame indices for target j (``rule="official"``), or mmagic's reflection."""
    idx = []
    for k in range(j - 2, j + 3):
        if rule == "official":
            if k < 0:
                k = -k
            if k >= num:
                k = num - 3
        else:
            k = -k if k < 0 else (2 * (num - 1) - k if k > num - 1 else k)
        idx.append(k)
    return idx


def run_official(net: TDAN_VSR, frames: torch.Tensor, rule: str = "official") -> torch.Tensor:
    """eval.py without the uint8 quantisation: frames (T, 3, H, W) in [0, 1] -> (T, 3, 4H, 4W)."""
    outs = []
    for j in range(frames.shape[0]):
        lr = (frames[official_index(j, frames.shape[0], rule)] - 0.5).unsqueeze(0)
        out, _ = net(lr)
        outs.append(out[0] + 0.5)
    return torch.stack(outs)


MMAGIC_NAMES = [  # official -> mmagic TDANNet, written out independently of the model's table
    ("conv_first.", "feat_extract.0.conv."), ("residual_layer.", "feat_extract.1."), ("cr.", "feat_aggregate.0."),
    ("off2d_1.", "feat_aggregate.1.conv_offset."), ("dconv_1.", "feat_aggregate.1."),
    ("off2d_2.", "feat_aggregate.2.conv_offset."), ("deconv_2.", "feat_aggregate.2."),
    ("off2d_3.", "align_1.conv_offset."), ("deconv_3.", "align_1."), ("off2d.", "align_2.conv_offset."),
    ("dconv.", "align_2."), ("recon_lr.", "to_rgb."), ("fea_ex.0.", "reconstruct.0.conv."),
    ("recon_layer.", "reconstruct.1."), ("up.0.0.", "reconstruct.2.upsample_conv."),
    ("up.0.2.", "reconstruct.3.upsample_conv."), ("up.1.", "reconstruct.4."),
]


def to_mmagic(sd):
    out = {}
    for k, v in sd.items():
        for a, b in MMAGIC_NAMES:
            if k.startswith(a):
                k = b + k[len(a):]
                break
        out[k] = v
    return out
