"""deform_conv2d: deformable convolution, v1 (Dai et al. 2017) and modulated v2 (Zhu et al. 2019).

    deform_conv2d(input, offset, weight, bias=None, stride=1, padding=0, dilation=1, mask=None)

has ``torchvision.ops.deform_conv2d``'s semantics (the same as mmcv's ``DeformConv2d`` / ``ModulatedDeformConv2d``):
input (N, Cin, H, W); weight (Cout, Cin / groups, kh, kw) (the convolution groups are Cin // weight.shape[1]);
offset (N, 2 * G * kh * kw, Ho, Wo) with G deformable groups, each group's channels a run of (dy, dx) pairs, one
per tap in row-major tap order; mask (N, G * kh * kw, Ho, Wo) or None (v1). Deformable group g covers input
channels [g * Cin / G, (g + 1) * Cin / G). Output pixel (oh, ow), tap (i, j) of group g samples

    y = oh * stride_h - pad_h + i * dil_h + dy,   x = ow * stride_w - pad_w + j * dil_w + dx

bilinearly, every corner outside the image counting as 0 (weights not renormalised), scales the sample by the
mask value, and the convolution sums sample x weight over taps and channels. (torchvision and mmcv return 0 for
a point with y <= -1 or y >= H (x likewise): the zero corners give the same value there; the only difference is
the offset gradient exactly on y == -1 / y == H, a set of measure zero.)
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

__all__ = ["deform_conv2d", "deform_conv2d_ref"]

IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair, name: str) -> Tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def _geometry(input, offset, weight, bias, stride, padding, dilation, mask):
    """Checks the call; returns (groups, deformable groups, (sh, sw), (ph, pw), (dh, dw), (Ho, Wo))."""
    sh, sw = _pair(stride, "stride")
    ph, pw = _pair(padding, "padding")
    dh, dw = _pair(dilation, "dilation")
    if input.dim() != 4 or weight.dim() != 4 or offset.dim() != 4:
        raise ValueError("deform_conv2d expects input (N, Cin, H, W), offset (N, 2*G*kh*kw, Ho, Wo) and weight "
                         f"(Cout, Cin/groups, kh, kw), got {tuple(input.shape)}, {tuple(offset.shape)}, "
                         f"{tuple(weight.shape)}")
    if min(sh, sw, dh, dw) < 1 or min(ph, pw) < 0:
        raise ValueError(f"deform_conv2d: stride and dilation must be >= 1 and padding >= 0, got stride {stride}, "
                         f"padding {padding}, dilation {dilation}")
    n, cin, h, w = input.shape
    cout, cpg, kh, kw = weight.shape
    if cpg == 0 or cin % cpg:
        raise ValueError(f"deform_conv2d: weight {tuple(weight.shape)} does not fit {cin} input channels")
    groups = cin // cpg
    if cout % groups:
        raise ValueError(f"deform_conv2d: {cout} output channels are not divisible by {groups} groups")
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"deform_conv2d: input {h}x{w} is too small for a {kh}x{kw} kernel with padding {padding}"
                         f" and dilation {dilation}")
    taps = kh * kw
    if offset.shape[1] % (2 * taps) or offset.shape[1] == 0:
        raise ValueError(f"deform_conv2d: offset has {offset.shape[1]} channels, not a multiple of 2*kh*kw = "
                         f"{2 * taps}")
    g = offset.shape[1] // (2 * taps)
    if cin % g:
        raise ValueError(f"deform_conv2d: {cin} input channels are not divisible by {g} deformable groups")
    if offset.shape[0] != n or tuple(offset.shape[2:]) != (ho, wo):
        raise ValueError(f"deform_conv2d: offset must be ({n}, {2 * g * taps}, {ho}, {wo}), got "
                         f"{tuple(offset.shape)}")
    if mask is not None and tuple(mask.shape) != (n, g * taps, ho, wo):
        raise ValueError(f"deform_conv2d: mask must be ({n}, {g * taps}, {ho}, {wo}), got {tuple(mask.shape)}")
    if bias is not None and tuple(bias.shape) != (cout,):
        raise ValueError(f"deform_conv2d: bias must be ({cout},), got {tuple(bias.shape)}")
    for name, t in (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask), ("input", input)):
        if t is None:
            continue
        if t.dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
            raise TypeError(f"deform_conv2d {name}: expected a float32/float16/bfloat16/float64 tensor, got {t.dtype}")
        if t.device != input.device:
            raise ValueError(f"deform_conv2d: {name} on {t.device}, input on {input.device}")
    return groups, g, (sh, sw), (ph, pw), (dh, dw), (ho, wo)


# ============================================================================================ reference
def _sample_columns(input, offset, mask, g, kh, kw, stride, padding, dilation, out_hw):
    """The deformable im2col: (N, Cin, kh*kw, Ho*Wo) bilinear samples (times the mask), in input's dtype math.
    Plain torch ops (gather), so autograd gives every gradient."""
    n, cin, h, w = input.shape
    ho, wo = out_hw
    taps, cg = kh * kw, cin // g
    dt = input.dtype
    off = offset.to(dt).reshape(n, g, taps, 2, ho * wo)
    ti = torch.arange(taps, device=input.device)
    base_y = (torch.arange(ho, device=input.device) * stride[0] - padding[0]).to(dt)
    base_x = (torch.arange(wo, device=input.device) * stride[1] - padding[1]).to(dt)
    tap_y = ((ti // kw) * dilation[0]).to(dt)
    tap_x = ((ti % kw) * dilation[1]).to(dt)
    py = (base_y[:, None].expand(ho, wo).reshape(-1)[None, :] + tap_y[:, None])  # (taps, P)
    px = (base_x[None, :].expand(ho, wo).reshape(-1)[None, :] + tap_x[:, None])
    y = py + off[:, :, :, 0]  # (N, G, taps, P)
    x = px + off[:, :, :, 1]
    y0f, x0f = torch.floor(y), torch.floor(x)
    ly, lx = y - y0f, x - x0f
    y0, x0 = y0f.long(), x0f.long()
    flat = input.reshape(n, g, cg, h * w)
    cols = 0
    for cy, cx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                        (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        ok = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).reshape(n, g, 1, taps * ho * wo)
        v = torch.gather(flat, 3, idx.expand(n, g, cg, taps * ho * wo)).reshape(n, g, cg, taps, ho * wo)
        cols = cols + v * (wgt * ok.to(dt))[:, :, None]
    if mask is not None:
        cols = cols * mask.to(dt).reshape(n, g, 1, taps, ho * wo)
    return cols.reshape(n, cin, taps, ho * wo)


def deform_conv2d_ref(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                      dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference in plain torch: deformable im2col by gathers, then a (grouped) matmul. Computed in fp32 for
    16-bit inputs (fp64 for fp64), the result in input's dtype; differentiable by autograd in every argument."""
    groups, g, stride, padding, dilation, (ho, wo) = _geometry(input, offset, weight, bias, stride, padding,
                                                                dilation, mask)
    n, cin = input.shape[:2]
    cout, cpg, kh, kw = weight.shape
    cdt = torch.float64 if input.dtype == torch.float64 else torch.float32
    cols = _sample_columns(input.to(cdt), offset, mask, g, kh, kw, stride, padding, dilation, (ho, wo))
    cols = cols.reshape(n, groups, cpg * kh * kw, ho * wo)
    wm = weight.to(cdt).reshape(groups, cout // groups, cpg * kh * kw)
    out = torch.einsum("gok,ngkp->ngop", wm, cols).reshape(n, cout, ho, wo)
    if bias is not None:
        out = out + bias.to(cdt)[None, :, None, None]
    return out.to(input.dtype)


# ============================================================================================ public
def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                  dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Drop-in for ``torchvision.ops.deform_conv2d`` (same arguments, same result) on the active backend."""
    return deform_conv2d_ref(input, offset, weight, bias, stride, padding, dilation, mask)
