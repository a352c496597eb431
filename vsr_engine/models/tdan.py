"""TDAN: Temporally-Deformable Alignment Network (Tian, Zhang, Fu, Xu; CVPR 2020), x4.

For each target frame t the network sees 5 LR frames t-2 .. t+2 (an edge-frame policy picks them near the clip
ends) and restores frame t:

1. feature extraction, shared by all frames: conv 3->64 + ReLU, 5 residual blocks (conv, ReLU, conv, + x);
2. temporally-deformable alignment of each neighbour i != t to t (4 deformable convs v1, 3x3, 8 deformable
   groups, no bias; each one's offsets come from a 3x3 conv 64 -> 2*8*9):
       f = conv(cat(F_t, F_i))               f = dconv(f, off(f))      f = dconv(f, off(f))
       a = dconv(F_i, off(f))                a = dconv(a, off(a))       aligned LR_i = conv 64->3 (a)
   the centre keeps its own LR frame;
3. reconstruction from the 5 (aligned) LR frames: conv 15->64 + ReLU, 10 residual blocks, two x2 pixel-shuffle
   stages (conv 64->256, shuffle 2; no activation), conv 64->3 without bias.

Inputs are normalised as x - 0.5 (official: ``x/255 - 0.5``; mmagic: mean 127.5, std 255 -- the same map), the
output is y + 0.5. Edge frames (``edge=``): ``"reflection"`` (mmagic's test pipeline, the default: index -k
before the clip, 2(T-1)-k after it) or ``"official"`` (the official eval.py: -k before, T-3 after); indices are
then clamped into the clip (clips shorter than 3 frames).

Parameter names are mmagic's ``TDANNet`` (``feat_extract``, ``feat_aggregate``, ``align_1``, ``align_2``,
``to_rgb``, ``reconstruct``); the official names (``conv_first``, ``residual_layer``, ``cr``, ``off2d_1``/
``dconv_1`` ...) are renamed by :func:`official_to_mmagic` when a checkpoint is read.
The deformable convolutions call ``vsr_engine.ops.deform_conv2d`` when it exists, else :func:`deform_conv2d_torch`.
"""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

EDGE_POLICIES = ("reflection", "official")


# --------------------------------------------------------------------------------------------------------- op
def deform_conv2d_torch(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, padding: int = 1) -> torch.Tensor:
    """Deformable conv v1, stride 1, dilation 1, no bias, in plain torch: each deformable group's K = kh*kw
    taps are sampled with ``grid_sample`` (bilinear, zeros outside, align_corners: exactly the torchvision /
    mmcv v1 rule -- a corner outside the image contributes 0), then one matmul. TDAN's fallback while
    ``vsr_engine.ops.deform_conv2d`` is absent; coordinates and sampling are fp32 (fp64 for fp64 input), the result has x's dtype."""
    n, c, h, w = x.shape
    cout, cin, kh, kw = weight.shape
    k = kh * kw
    g = offset.shape[1] // (2 * k)
    if cin != c or offset.shape[1] != 2 * g * k or c % g:
        raise ValueError(f"deform_conv2d: input {tuple(x.shape)}, offset {tuple(offset.shape)}, weight "
                         f"{tuple(weight.shape)} do not fit")
    ho, wo = h + 2 * padding - kh + 1, w + 2 * padding - kw + 1
    cdt = torch.float64 if x.dtype == torch.float64 else torch.float32
    off = offset.to(cdt).view(n, g, k, 2, ho, wo)
    dev = x.device
    ky = torch.arange(kh, device=dev).repeat_interleave(kw).view(1, 1, k, 1, 1).to(cdt)
    kx = torch.arange(kw, device=dev).repeat(kh).view(1, 1, k, 1, 1).to(cdt)
    py = torch.arange(ho, device=dev).view(1, 1, 1, ho, 1).to(cdt) - padding + ky + off[:, :, :, 0]
    px = torch.arange(wo, device=dev).view(1, 1, 1, 1, wo).to(cdt) - padding + kx + off[:, :, :, 1]
    # pixel -> [-1, 1] with align_corners=True (a 1-pixel axis gets a padded copy so the map is defined)
    src = x.to(cdt)
    if h == 1 or w == 1:
        src = F.pad(src, (0, int(w == 1), 0, int(h == 1)))
    hh, ww = src.shape[-2:]
    grid = torch.stack([px * (2.0 / (ww - 1)) - 1, py * (2.0 / (hh - 1)) - 1], dim=-1)
    if h == 1 or w == 1:   # samples in the padded row/column stay outside the image
        out_y = (py <= -1) | (py >= h)
        out_x = (px <= -1) | (px >= w)
        grid = torch.where((out_y | out_x).unsqueeze(-1), torch.full_like(grid, -3.0), grid)
    grid = grid.view(n * g, k * ho, wo, 2)
    cols = F.grid_sample(src.view(n * g, c // g, hh, ww), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)                       # (n*g, c/g, k*ho, wo)
    cols = cols.view(n, c * k, ho * wo)
    out = torch.matmul(weight.to(cdt).reshape(cout, c * k), cols)
    return out.view(n, cout, ho, wo).to(x.dtype)


_OP = []


def _deform(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if not _OP:
        try:
            from ..ops.deform_conv2d import deform_conv2d as op
            _OP.append(lambda a, o, wt: op(a, o, wt, None, 1, 1, 1))
        except ImportError:
            _OP.append(deform_conv2d_torch)
    return _OP[0](x, offset, weight)


# ------------------------------------------------------------------------------------------------- modules
class ConvReLU(nn.Module):
    """conv 3x3 + ReLU (mmcv ``ConvModule``: parameters under ``conv``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x))


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.conv1(x)))


class DeformConv(nn.Module):
    """3x3 deformable conv v1 (no bias) whose offsets come from ``conv_offset`` of ``extra`` (default: of x)."""

    def __init__(self, c: int, groups: int = 8):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c, c, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.conv_offset = nn.Conv2d(c, 2 * groups * 9, 3, padding=1)
        nn.init.zeros_(self.conv_offset.weight)   # mmcv: offsets start at 0 (a plain conv)
        nn.init.zeros_(self.conv_offset.bias)

    def forward(self, x, extra: Optional[torch.Tensor] = None):
        return _deform(x, self.conv_offset(x if extra is None else extra), self.weight)


class Upsample2(nn.Module):
    """conv c -> 4c, pixel shuffle 2 (mmagic ``PixelShufflePack``, no activation)."""

    def __init__(self, c: int):
        super().__init__()
        self.upsample_conv = nn.Conv2d(c, 4 * c, 3, padding=1)

    def forward(self, x):
        return F.pixel_shuffle(self.upsample_conv(x), 2)


def frame_indices(t: int, num: int, radius: int = 2, edge: str = "reflection") -> List[int]:
    """Indices of the 2*radius+1 input frames for target ``t`` of a ``num``-frame clip."""
    out = []
    for k in range(t - radius, t + radius + 1):
        if k < 0:
            k = -k
        if k > num - 1:
            k = 2 * (num - 1) - k if edge == "reflection" else num - 3
        out.append(min(max(k, 0), num - 1))
    return out


# --------------------------------------------------------------------------------------------------- model
class TDAN(nn.Module):
    """(N, T, 3, H, W) RGB in [0, 1] -> (N, T, 3, sH, sW): every frame restored from its 5-frame window."""

    temporal_radius = 2  # frames of context each side a target frame needs (the Engine's windows keep them)

    def __init__(self, num_feat: int = 64, num_extract_block: int = 5, num_reconstruct_block: int = 10,
                 deform_groups: int = 8, edge: str = "reflection", scale: float = 4.0):
        super().__init__()
        if edge not in EDGE_POLICIES:
            raise ValueError(f"tdan edge policy {edge!r}: choose {' or '.join(EDGE_POLICIES)}")
        c = num_feat
        self.num_feat, self.edge, self.num_frames = c, edge, 2 * self.temporal_radius + 1
        self.scale = float(scale)
        self.feat_extract = nn.Sequential(ConvReLU(3, c), nn.Sequential(*[ResidualBlock(c) for _ in range(num_extract_block)]))
        self.feat_aggregate = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), DeformConv(c, deform_groups),
                                            DeformConv(c, deform_groups))
        self.align_1 = DeformConv(c, deform_groups)
        self.align_2 = DeformConv(c, deform_groups)
        self.to_rgb = nn.Conv2d(c, 3, 3, padding=1)
        self.reconstruct = nn.Sequential(ConvReLU(3 * self.num_frames, c),
                                         nn.Sequential(*[ResidualBlock(c) for _ in range(num_reconstruct_block)]),
                                         Upsample2(c), Upsample2(c), nn.Conv2d(c, 3, 3, padding=1, bias=False))

    def output_size(self, h: int, w: int) -> Tuple[int, int]:
        from ..ops.meta_upscale import meta_out_size
        return meta_out_size(h, w, self.scale)

    def align(self, f_center: torch.Tensor, f_neigh: torch.Tensor) -> torch.Tensor:
        """Aligned LR image (normalised) of neighbour features ``f_neigh`` to ``f_center``: (B, 3, H, W)."""
        agg = self.feat_aggregate(torch.cat([f_center, f_neigh], dim=1))
        return self.to_rgb(self.align_2(self.align_1(f_neigh, agg)))

    def restore(self, feats: torch.Tensor, lrs: torch.Tensor, windows: List[List[int]]):
        """HR (normalised) and aligned LRs (B, 5, 3, H, W) for ``windows`` (lists of 5 indices into dim 0 of
        ``feats`` (T, C, H, W) / ``lrs`` (T, 3, H, W), the centre at position 2)."""
        mid = self.temporal_radius
        pos = [j for j in range(self.num_frames) if j != mid]
        cen = torch.tensor([wd[mid] for wd in windows], device=feats.device)
        nb = torch.tensor([wd[j] for wd in windows for j in pos], device=feats.device)
        al = self.align(feats[cen].repeat_interleave(len(pos), 0), feats[nb])
        al = al.view(len(windows), len(pos), *al.shape[1:])
        aligned = torch.cat([al[:, :mid], lrs[cen].unsqueeze(1), al[:, mid:]], dim=1)
        return self.reconstruct(aligned.flatten(1, 2)), aligned

    def forward_window(self, lrs: torch.Tensor):
        """Official form: (N, 5, 3, H, W) in [0, 1] -> (HR of the centre (N, 3, 4H, 4W) in [0, 1], aligned LRs)."""
        n, t, c, h, w = lrs.shape
        x = (lrs - 0.5).reshape(n * t, c, h, w)
        feats = self.feat_extract(x)
        wins = [[i * t + j for j in range(t)] for i in range(n)]
        hr, aligned = self.restore(feats, x, wins)
        return hr + 0.5, aligned + 0.5

    def forward(self, lqs: torch.Tensor, scale: Optional[float] = None, chunk_pixels: int = 1 << 20) -> torch.Tensor:
        """``scale`` overrides the model's output scale for this call (the x4 output resampled)."""
        n, t, c, h, w = lqs.shape
        outs = []
        per = max(1, chunk_pixels // (4 * h * w))   # target frames per chunk (4 alignments each)
        for b in range(n):
            x = lqs[b] - 0.5
            feats = self.feat_extract(x)
            frames = []
            for s in range(0, t, per):
                wins = [frame_indices(i, t, self.temporal_radius, self.edge) for i in range(s, min(t, s + per))]
                frames.append(self.restore(feats, x, wins)[0] + 0.5)
            outs.append(torch.cat(frames))
        y = torch.stack(outs)
        r = self.scale if scale is None else float(scale)
        if r != 4.0:
            from .resample import resample_x4
            y = resample_x4(y, (h, w), r)
        return y


# ---------------------------------------------------------------------------------------------- checkpoints
_OFFICIAL = [  # official TDAN_VSR name -> mmagic TDANNet name
    (r"^conv_first\.", "feat_extract.0.conv."),
    (r"^residual_layer\.", "feat_extract.1."),
    (r"^cr\.", "feat_aggregate.0."),
    (r"^off2d_1\.", "feat_aggregate.1.conv_offset."), (r"^dconv_1\.weight$", "feat_aggregate.1.weight"),
    (r"^off2d_2\.", "feat_aggregate.2.conv_offset."), (r"^deconv_2\.weight$", "feat_aggregate.2.weight"),
    (r"^off2d_3\.", "align_1.conv_offset."), (r"^deconv_3\.weight$", "align_1.weight"),
    (r"^off2d\.", "align_2.conv_offset."), (r"^dconv\.weight$", "align_2.weight"),
    (r"^recon_lr\.", "to_rgb."),
    (r"^fea_ex\.0\.", "reconstruct.0.conv."),
    (r"^recon_layer\.", "reconstruct.1."),
    (r"^up\.0\.0\.", "reconstruct.2.upsample_conv."), (r"^up\.0\.2\.", "reconstruct.3.upsample_conv."),
    (r"^up\.1\.weight$", "reconstruct.4.weight"),
]


def is_official(sd: Mapping[str, torch.Tensor]) -> bool:
    return "off2d_1.weight" in sd and "dconv_1.weight" in sd


def official_to_mmagic(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pat, rep in _OFFICIAL:
            k2 = re.sub(pat, rep, k)
            if k2 != k:
                k = k2
                break
        out[k] = v
    return out


def arch_from_state_dict(sd: Mapping[str, torch.Tensor]) -> Dict[str, int]:
    def count(prefix):
        ks = {int(m.group(1)) for k in sd for m in [re.match(re.escape(prefix) + r"\.(\d+)\.", k)] if m}
        return max(ks) + 1 if ks else 0
    c = int(sd["feat_extract.0.conv.weight"].shape[0])
    return {"num_feat": c, "num_extract_block": count("feat_extract.1"),
            "num_reconstruct_block": count("reconstruct.1"),
            "deform_groups": int(sd["align_1.conv_offset.weight"].shape[0]) // 18}
