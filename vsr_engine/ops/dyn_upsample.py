"""dyn_upsample: DUF's dynamic upsampling (Jo et al., CVPR 2018) -- softmax over 25 filter taps, 5x5 neighbourhood
gather of the centre frame, per-pixel weighted sum, TensorFlow depth-to-space, plus the depth-to-space of the
predicted residual, in one pass.

Contract (github yhjo09/VSR-DUF: nets.py ``FR_*`` reshape + softmax, utils.py ``DynFilter3D`` /
``depth_to_space_3D``, test.py ``G``), written for NCHW tensors with r = ``scale``:

  x   (N, C, H, W)        the centre frame (C = 3 in DUF; any C works)
  f   (N, 25*r*r, H, W)   the filter conv's raw output (before softmax); TF reshapes the channel axis to
                          [25, r*r], so channel ``t*r*r + k`` is tap t = dy*5 + dx (dy, dx in 0..4) of sub-pixel
                          k = i*r + j (i: row, j: column inside the r x r block)
  res (N, C*r*r, H, W)    the residual conv's raw output; TF depth_to_space with C output channels reads
                          channel ``(i*r + j)*C + c`` (torch's pixel_shuffle reads ``c*r*r + i*r + j``)

  out[n, c, h*r + i, w*r + j] = sum_t softmax_t(f[n, t*r*r + k, h, w]) * x[n, c, h + dy - 2, w + dx - 2]
                                + res[n, (i*r + j)*C + c, h, w],          k = i*r + j, t = dy*5 + dx,
  with x = 0 outside the frame (DynFilter3D's 'SAME' conv2d with an identity 5x5x1x25 kernel = zero padding 2).

The softmax is over the 25 taps of each (pixel, sub-pixel) separately, the same filter for every colour channel.
Returns (N, C, r*H, r*W) in x's dtype; 16-bit inputs are computed in fp32 (fp64 stays fp64).
Backends: torch (``dyn_upsample_ref``; more follow in this file).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ._util import acc_dtype, check_float

__all__ = ["dyn_upsample", "dyn_upsample_ref"]

TAPS = 25  # 5 x 5
KS = 5


# ============================================================================================ reference
def _check(x: torch.Tensor, f: torch.Tensor, res: torch.Tensor, scale: int) -> int:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"dyn_upsample: scale must be a positive int, got {scale!r}")
    if x.dim() != 4 or f.dim() != 4 or res.dim() != 4:
        raise ValueError(f"dyn_upsample expects x (N,C,H,W), f (N,25*r*r,H,W), res (N,C*r*r,H,W), got "
                         f"{tuple(x.shape)}, {tuple(f.shape)}, {tuple(res.shape)}")
    n, c, h, w = x.shape
    rr = scale * scale
    if tuple(f.shape) != (n, TAPS * rr, h, w):
        raise ValueError(f"dyn_upsample: f must be {(n, TAPS * rr, h, w)} for x {tuple(x.shape)} and scale "
                         f"{scale}, got {tuple(f.shape)}")
    if tuple(res.shape) != (n, c * rr, h, w):
        raise ValueError(f"dyn_upsample: res must be {(n, c * rr, h, w)} for x {tuple(x.shape)} and scale "
                         f"{scale}, got {tuple(res.shape)}")
    for name, t in (("x", x), ("f", f), ("res", res)):
        check_float(f"dyn_upsample {name}", t)
    if not (x.device == f.device == res.device):
        raise ValueError(f"dyn_upsample: x on {x.device}, f on {f.device}, res on {res.device}")
    return scale


def depth_to_space_tf(t: torch.Tensor, r: int) -> torch.Tensor:
    """TensorFlow's depth_to_space on NCHW: (N, r*r*C, H, W) -> (N, C, rH, rW), reading channel (i*r + j)*C + c."""
    n, crr, h, w = t.shape
    c = crr // (r * r)
    return t.view(n, r, r, c, h, w).permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * r, w * r)


def dyn_upsample_ref(x: torch.Tensor, f: torch.Tensor, res: torch.Tensor, scale: int) -> torch.Tensor:
    """Eager reference: unfold (the 5x5 zero-padded neighbourhood), softmax over taps, einsum, two TF
    depth-to-spaces. Differentiable in x, f and res."""
    r = _check(x, f, res, scale)
    n, c, h, w = x.shape
    cdt = acc_dtype(x.dtype)
    patches = F.unfold(x.to(cdt), KS, padding=KS // 2).view(n, c, TAPS, h, w)  # tap t = dy*5 + dx
    wts = torch.softmax(f.to(cdt).view(n, TAPS, r * r, h, w), dim=1)
    y = torch.einsum("nctyx,ntkyx->nkcyx", patches, wts).reshape(n, r * r * c, h, w)  # channel k*C + c
    out = depth_to_space_tf(y, r) + depth_to_space_tf(res.to(cdt), r)
    return out.to(x.dtype)


# ============================================================================================ public
def dyn_upsample(x: torch.Tensor, f: torch.Tensor, res: torch.Tensor, scale: int) -> torch.Tensor:
    """DUF's output stage: x (N, C, H, W) centre frame, f (N, 25*r*r, H, W) raw filter logits, res (N, C*r*r, H, W)
    raw residual, both in the official TF channel order (module docstring) -> (N, C, rH, rW)."""
    _check(x, f, res, scale)
    return dyn_upsample_ref(x, f, res, scale)
