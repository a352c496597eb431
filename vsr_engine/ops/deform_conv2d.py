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

import math
from typing import List, NamedTuple, Optional, Tuple, Union

import torch

from . import _cuda
from ._autocast import autocast_inputs
from ._backend import INTERPRET, TRITON_OK, pick, tl, triton
from ._util import CUDA_DTYPE, DOT_MIN, acc_dtype, cdiv, next_pow2, tl_acc

__all__ = ["deform_conv2d", "deform_conv2d_ref"]

IntPair = Union[int, Tuple[int, int]]


def _pair(v: IntPair, name: str) -> Tuple[int, int]:
    t = (v, v) if isinstance(v, int) else tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"deform_conv2d: {name} must be an int or a pair, got {v!r}")
    return t  # type: ignore[return-value]


def _check(input, offset, weight, bias, stride, padding, dilation, mask):
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
def _ref_corners(input, offset, g, kh, kw, stride, padding, dilation, out_hw):
    """The bilinear geometry of every (image, group, tap, output pixel): four (flat pixel index, weight) pairs,
    weight 0 for a corner outside the image (its index clamped inside), and the fractional parts (ly, lx); all
    (N, G, taps, P). Plain torch ops: differentiable in offset by autograd."""
    n, cin, h, w = input.shape
    ho, wo = out_hw
    taps, dt = kh * kw, input.dtype
    off = offset.to(dt).reshape(n, g, taps, 2, ho * wo)
    ti = torch.arange(taps, device=input.device)
    base_y = (torch.arange(ho, device=input.device) * stride[0] - padding[0]).to(dt)
    base_x = (torch.arange(wo, device=input.device) * stride[1] - padding[1]).to(dt)
    py = base_y[:, None].expand(ho, wo).reshape(-1)[None, :] + ((ti // kw) * dilation[0]).to(dt)[:, None]
    px = base_x[None, :].expand(ho, wo).reshape(-1)[None, :] + ((ti % kw) * dilation[1]).to(dt)[:, None]
    y = py + off[:, :, :, 0]  # (N, G, taps, P)
    x = px + off[:, :, :, 1]
    y0f, x0f = torch.floor(y), torch.floor(x)
    ly, lx = y - y0f, x - x0f
    y0, x0 = y0f.long(), x0f.long()
    out = []
    for cy, cx, wgt in ((y0, x0, (1 - ly) * (1 - lx)), (y0, x0 + 1, (1 - ly) * lx),
                        (y0 + 1, x0, ly * (1 - lx)), (y0 + 1, x0 + 1, ly * lx)):
        ok = (cy >= 0) & (cy < h) & (cx >= 0) & (cx < w)
        out.append((cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1), wgt * ok.to(dt), ok))
    return out, ly, lx


def _take(flat, idx):
    """flat (N, G, cg, H*W), idx (N, G, taps, P) -> (N, G, cg, taps, P)."""
    n, g, cg, _ = flat.shape
    _, _, taps, p = idx.shape
    i = idx.reshape(n, g, 1, taps * p).expand(n, g, cg, taps * p)
    return torch.gather(flat, 3, i).reshape(n, g, cg, taps, p)


def _sample_columns(input, offset, mask, g, kh, kw, stride, padding, dilation, out_hw):
    """The deformable im2col: (N, Cin, kh*kw, Ho*Wo) bilinear samples (times the mask), in input's dtype."""
    n, cin, h, w = input.shape
    ho, wo = out_hw
    corners, _, _ = _ref_corners(input, offset, g, kh, kw, stride, padding, dilation, out_hw)
    flat = input.reshape(n, g, cin // g, h * w)
    cols = sum(_take(flat, idx) * wgt[:, :, None] for idx, wgt, _ in corners)
    if mask is not None:
        cols = cols * mask.to(input.dtype).reshape(n, g, 1, kh * kw, ho * wo)
    return cols.reshape(n, cin, kh * kw, ho * wo)


def deform_conv2d_ref(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                      bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                      dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference in plain torch: deformable im2col by gathers, then a (grouped) matmul. Computed in fp32 for
    16-bit inputs (fp64 for fp64), the result in input's dtype; differentiable by autograd in every argument."""
    groups, g, stride, padding, dilation, (ho, wo) = _check(input, offset, weight, bias, stride, padding,
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


# ============================================================================================ triton
# Layout: input channels-last (N, H, W, Cin); weight as (groups, taps, Cin/groups, Cout/groups), so a K chunk
# (one tap, BLOCK_C channels of one conv group) is a [BLOCK_C, BLOCK_O] row block; offset / mask / output NCHW as
# given (a pixel row of one offset channel is contiguous). A channel chunk is NGC runs of CGC channels, each run
# inside one deformable group: the sampling geometry is computed on [BLOCK_P, NGC] (each (pixel, group, tap)
# offset read once) and broadcast over the run's channels.
if TRITON_OK:
    @triton.jit
    def _expand(a, BLOCK_P: tl.constexpr, NGC: tl.constexpr, CGC: tl.constexpr):
        """[BLOCK_P, NGC] -> [BLOCK_P, NGC * CGC]: each group's value over its channel run."""
        return tl.reshape(tl.broadcast_to(a[:, :, None], (BLOCK_P, NGC, CGC)), (BLOCK_P, NGC * CGC))

    @triton.jit
    def _runs(a, BLOCK_P: tl.constexpr, NGC: tl.constexpr, CGC: tl.constexpr):
        """[BLOCK_P, NGC * CGC] -> [BLOCK_P, NGC]: the sum over each channel run."""
        return tl.sum(tl.reshape(a, (BLOCK_P, NGC, CGC)), axis=2)

    @triton.jit
    def _mm(a, b, DOT: tl.constexpr, CDT: tl.constexpr, LDT: tl.constexpr):
        """a @ b: DOT 2 tl.dot on 16-bit operands (LDT) with fp32 accumulation, 1 fp32 ieee tl.dot,
        0 broadcast multiply + tl.sum in CDT (fp64)."""
        if DOT == 2:
            return tl.dot(a.to(LDT), b.to(LDT))
        elif DOT == 1:
            return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
        else:
            return tl.sum(a.to(CDT)[:, :, None] * b.to(CDT)[None, :, :], axis=1)

    @triton.jit
    def _geometry(off_ptr, msk_ptr, n, p, pm, dg, dgm, t, H, W, Wo, HWo, G, sh, sw, ph, pw, dh, dw,
                  TAPS: tl.constexpr, KW: tl.constexpr, HAS_MASK: tl.constexpr, CDT: tl.constexpr):
        """Tap ``t`` of deformable groups ``dg`` [NGC] at output pixels ``p`` [BLOCK_P]: the four corners' pixel
        indices (-1 where outside the image) and bilinear weights, the fractional parts and the mask value, all
        [BLOCK_P, NGC]."""
        oh = p // Wo
        ow = p % Wo
        m2 = pm[:, None] & dgm[None, :]
        ch = (dg * TAPS + t) * 2
        ob = off_ptr + n.to(tl.int64) * (2 * G * TAPS) * HWo + p[:, None]
        dy = tl.load(ob + ch[None, :].to(tl.int64) * HWo, mask=m2, other=0.0).to(CDT)
        dx = tl.load(ob + (ch + 1)[None, :].to(tl.int64) * HWo, mask=m2, other=0.0).to(CDT)
        if HAS_MASK:
            mb = msk_ptr + n.to(tl.int64) * (G * TAPS) * HWo + p[:, None]
            mv = tl.load(mb + (dg * TAPS + t)[None, :].to(tl.int64) * HWo, mask=m2, other=0.0).to(CDT)
        else:
            mv = tl.where(m2, 1.0, 0.0).to(CDT)
        Y = (oh * sh - ph + (t // KW) * dh).to(CDT)[:, None] + dy
        X = (ow * sw - pw + (t % KW) * dw).to(CDT)[:, None] + dx
        # beyond one pixel outside every corner is zero; clamping keeps the int conversion in range
        zero = Y * 0.0  # (H, W may arrive as compile-time 1s: keep the arithmetic on tensors)
        Y = tl.minimum(tl.maximum(Y, -2.0), zero + (H + 1))
        X = tl.minimum(tl.maximum(X, -2.0), zero + (W + 1))
        y0f = tl.floor(Y)
        x0f = tl.floor(X)
        ly = Y - y0f
        lx = X - x0f
        y0 = y0f.to(tl.int32)
        x0 = x0f.to(tl.int32)
        vy0 = (y0 >= 0) & (y0 < H) & m2
        vy1 = (y0 + 1 >= 0) & (y0 + 1 < H) & m2
        vx0 = (x0 >= 0) & (x0 < W)
        vx1 = (x0 + 1 >= 0) & (x0 + 1 < W)
        i00 = tl.where(vy0 & vx0, y0 * W + x0, -1)
        i01 = tl.where(vy0 & vx1, y0 * W + x0 + 1, -1)
        i10 = tl.where(vy1 & vx0, (y0 + 1) * W + x0, -1)
        i11 = tl.where(vy1 & vx1, (y0 + 1) * W + x0 + 1, -1)
        return i00, i01, i10, i11, ly, lx, mv

    @triton.jit
    def _gather(xb, i, cm, Cin, BLOCK_P: tl.constexpr, NGC: tl.constexpr, CGC: tl.constexpr, CDT: tl.constexpr):
        """The [BLOCK_P, BLOCK_C] input values at corner indices ``i`` [BLOCK_P, NGC] (0 where i < 0)."""
        ie = _expand(i, BLOCK_P, NGC, CGC)
        return tl.load(xb + tl.maximum(ie, 0).to(tl.int64) * Cin, mask=(ie >= 0) & cm[None, :], other=0.0).to(CDT)

    @triton.jit
    def _scatter(xb, i, gm, wgt, cm, Cin, BLOCK_P: tl.constexpr, NGC: tl.constexpr, CGC: tl.constexpr):
        """acc[corner i] += gm * wgt for the [BLOCK_P, BLOCK_C] tile (i < 0: outside, nothing)."""
        ie = _expand(i, BLOCK_P, NGC, CGC)
        tl.atomic_add(xb + tl.maximum(ie, 0).to(tl.int64) * Cin, gm * _expand(wgt, BLOCK_P, NGC, CGC),
                      mask=(ie >= 0) & cm[None, :], sem="relaxed")

    @triton.jit
    def _columns(x_ptr, off_ptr, msk_ptr, n, gi, p, pm, c0, t, Cin, H, W, Wo, HWo, G, CPG, CG,
                 sh, sw, ph, pw, dh, dw, TAPS: tl.constexpr, KW: tl.constexpr, HAS_MASK: tl.constexpr,
                 CDT: tl.constexpr, BLOCK_P: tl.constexpr, NGC: tl.constexpr, CGC: tl.constexpr):
        """The deformable im2col tile: [BLOCK_P, BLOCK_C] masked bilinear samples of tap ``t``, channels
        c0 .. c0 + BLOCK_C of conv group ``gi``."""
        cc = c0 + tl.arange(0, NGC * CGC)
        cm = cc < CPG
        sub = c0 + tl.arange(0, NGC) * CGC
        dg = (gi * CPG + sub) // CG
        i00, i01, i10, i11, ly, lx, mv = _geometry(off_ptr, msk_ptr, n, p, pm, dg, sub < CPG, t, H, W, Wo, HWo, G,
                                                   sh, sw, ph, pw, dh, dw, TAPS, KW, HAS_MASK, CDT)
        xb = x_ptr + n.to(tl.int64) * H * W * Cin + gi * CPG + cc[None, :]
        cols = _gather(xb, i00, cm, Cin, BLOCK_P, NGC, CGC, CDT) * _expand((1.0 - ly) * (1.0 - lx) * mv, BLOCK_P,
                                                                           NGC, CGC)
        cols += _gather(xb, i01, cm, Cin, BLOCK_P, NGC, CGC, CDT) * _expand((1.0 - ly) * lx * mv, BLOCK_P, NGC, CGC)
        cols += _gather(xb, i10, cm, Cin, BLOCK_P, NGC, CGC, CDT) * _expand(ly * (1.0 - lx) * mv, BLOCK_P, NGC, CGC)
        cols += _gather(xb, i11, cm, Cin, BLOCK_P, NGC, CGC, CDT) * _expand(ly * lx * mv, BLOCK_P, NGC, CGC)
        return cols

    @triton.jit
    def _fwd_kernel(x_ptr, off_ptr, msk_ptr, w_ptr, b_ptr, out_ptr, Cin, H, W, Cout, Wo, HWo, G, GROUPS, CPG,
                    COG, CG, sh, sw, ph, pw, dh, dw, TAPS: tl.constexpr, KW: tl.constexpr,
                    HAS_MASK: tl.constexpr, HAS_BIAS: tl.constexpr, DOT: tl.constexpr, CDT: tl.constexpr,
                    LDT: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, NGC: tl.constexpr,
                    CGC: tl.constexpr):
        """out[n, gi * COG + o, p] = sum over taps and channel chunks of columns @ weight rows (implicit GEMM)."""
        ng = tl.program_id(2)
        n = ng // GROUPS
        gi = ng % GROUPS
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HWo
        oo = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        om = oo < COG
        acc = tl.zeros([BLOCK_P, BLOCK_O], dtype=CDT)
        for t in range(TAPS):
            for c0 in range(0, CPG, NGC * CGC):
                cols = _columns(x_ptr, off_ptr, msk_ptr, n, gi, p, pm, c0, t, Cin, H, W, Wo, HWo, G, CPG, CG,
                                sh, sw, ph, pw, dh, dw, TAPS, KW, HAS_MASK, CDT, BLOCK_P, NGC, CGC)
                cc = c0 + tl.arange(0, NGC * CGC)
                rows = ((gi * TAPS + t) * CPG + cc).to(tl.int64) * COG
                wt = tl.load(w_ptr + rows[:, None] + oo[None, :], mask=(cc < CPG)[:, None] & om[None, :],
                             other=0.0)
                acc += _mm(cols, wt, DOT, CDT, LDT)
        if HAS_BIAS:
            acc += tl.load(b_ptr + gi * COG + oo, mask=om, other=0.0).to(CDT)[None, :]
        o = out_ptr + (n.to(tl.int64) * Cout + gi * COG + oo[None, :]) * HWo + p[:, None]
        tl.store(o, acc.to(out_ptr.dtype.element_ty), mask=pm[:, None] & om[None, :])

    @triton.jit
    def _bwd_data_kernel(x_ptr, off_ptr, msk_ptr, w_ptr, g_ptr, gx_ptr, goff_ptr, gmsk_ptr, Cin, H, W, Cout,
                         Wo, HWo, G, GROUPS, CPG, COG, CG, sh, sw, ph, pw, dh, dw, TAPS: tl.constexpr,
                         KW: tl.constexpr, HAS_MASK: tl.constexpr, NEED_X: tl.constexpr, NEED_OFF: tl.constexpr,
                         NEED_MASK: tl.constexpr, DOT: tl.constexpr, CDT: tl.constexpr, LDT: tl.constexpr,
                         BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, NGC: tl.constexpr, CGC: tl.constexpr):
        """Per tap and channel chunk: d/dcolumns = grad @ weight^T (over output chunks), then scattered to the four
        corners (d/dinput, atomics into a channels-last acc buffer) and reduced over each channel run against the
        corner values (d/doffset, d/dmask; atomics: a group's channels may span chunks)."""
        ng = tl.program_id(1)
        n = ng // GROUPS
        gi = ng % GROUPS
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HWo
        gb = g_ptr + (n.to(tl.int64) * Cout + gi * COG) * HWo + p[:, None]
        for t in range(TAPS):
            for c0 in range(0, CPG, NGC * CGC):
                cc = c0 + tl.arange(0, NGC * CGC)
                cm = cc < CPG
                rows = ((gi * TAPS + t) * CPG + cc).to(tl.int64) * COG
                gcol = tl.zeros([BLOCK_P, NGC * CGC], dtype=CDT)
                for o0 in range(0, COG, BLOCK_O):
                    oo = o0 + tl.arange(0, BLOCK_O)
                    om = oo < COG
                    g = tl.load(gb + oo[None, :].to(tl.int64) * HWo, mask=pm[:, None] & om[None, :], other=0.0)
                    wt = tl.load(w_ptr + rows[None, :] + oo[:, None], mask=cm[None, :] & om[:, None], other=0.0)
                    gcol += _mm(g, wt, DOT, CDT, LDT)
                sub = c0 + tl.arange(0, NGC) * CGC
                dg = (gi * CPG + sub) // CG
                dgm = sub < CPG
                i00, i01, i10, i11, ly, lx, mv = _geometry(off_ptr, msk_ptr, n, p, pm, dg, dgm, t, H, W, Wo, HWo,
                                                           G, sh, sw, ph, pw, dh, dw, TAPS, KW, HAS_MASK, CDT)
                if NEED_X:
                    gm = gcol * _expand(mv, BLOCK_P, NGC, CGC)
                    xb = gx_ptr + n.to(tl.int64) * H * W * Cin + gi * CPG + cc[None, :]
                    _scatter(xb, i00, gm, (1.0 - ly) * (1.0 - lx), cm, Cin, BLOCK_P, NGC, CGC)
                    _scatter(xb, i01, gm, (1.0 - ly) * lx, cm, Cin, BLOCK_P, NGC, CGC)
                    _scatter(xb, i10, gm, ly * (1.0 - lx), cm, Cin, BLOCK_P, NGC, CGC)
                    _scatter(xb, i11, gm, ly * lx, cm, Cin, BLOCK_P, NGC, CGC)
                if NEED_OFF or NEED_MASK:
                    xb = x_ptr + n.to(tl.int64) * H * W * Cin + gi * CPG + cc[None, :]
                    v00 = _gather(xb, i00, cm, Cin, BLOCK_P, NGC, CGC, CDT)
                    v01 = _gather(xb, i01, cm, Cin, BLOCK_P, NGC, CGC, CDT)
                    v10 = _gather(xb, i10, cm, Cin, BLOCK_P, NGC, CGC, CDT)
                    v11 = _gather(xb, i11, cm, Cin, BLOCK_P, NGC, CGC, CDT)
                    lye = _expand(ly, BLOCK_P, NGC, CGC)
                    lxe = _expand(lx, BLOCK_P, NGC, CGC)
                    m2 = pm[:, None] & dgm[None, :]
                    if NEED_OFF:
                        dvy = (1.0 - lxe) * (v10 - v00) + lxe * (v11 - v01)
                        dvx = (1.0 - lye) * (v01 - v00) + lye * (v11 - v10)
                        g_y = _runs(gcol * dvy, BLOCK_P, NGC, CGC) * mv
                        g_x = _runs(gcol * dvx, BLOCK_P, NGC, CGC) * mv
                        ob = goff_ptr + n.to(tl.int64) * (2 * G * TAPS) * HWo + p[:, None]
                        ch = ((dg * TAPS + t) * 2)[None, :].to(tl.int64)
                        tl.atomic_add(ob + ch * HWo, g_y, mask=m2, sem="relaxed")
                        tl.atomic_add(ob + (ch + 1) * HWo, g_x, mask=m2, sem="relaxed")
                    if NEED_MASK:
                        val = (1.0 - lye) * ((1.0 - lxe) * v00 + lxe * v01) + lye * ((1.0 - lxe) * v10 + lxe * v11)
                        mb = gmsk_ptr + n.to(tl.int64) * (G * TAPS) * HWo + p[:, None]
                        tl.atomic_add(mb + (dg * TAPS + t)[None, :].to(tl.int64) * HWo,
                                      _runs(gcol * val, BLOCK_P, NGC, CGC), mask=m2, sem="relaxed")

    @triton.jit
    def _bwd_weight_kernel(x_ptr, off_ptr, msk_ptr, g_ptr, part_ptr, N, Cin, H, W, Cout, Wo, HWo, G, GROUPS,
                           CPG, COG, CG, sh, sw, ph, pw, dh, dw, NCH, SPLITS, TAPS: tl.constexpr, KW: tl.constexpr,
                           HAS_MASK: tl.constexpr, DOT: tl.constexpr, CDT: tl.constexpr, LDT: tl.constexpr,
                           BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, NGC: tl.constexpr, CGC: tl.constexpr):
        """part[s, gi, t, c, o] = sum over split s's pixel tiles (all images) of columns^T @ grad, for one K chunk
        (tap t, channel chunk) x one output block; the splits are summed by the caller (fixed order)."""
        kc = tl.program_id(0)
        t = kc // NCH
        c0 = (kc % NCH) * (NGC * CGC)
        oo = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        om = oo < COG
        gs = tl.program_id(2)
        gi = gs // SPLITS
        s = gs % SPLITS
        ntp = tl.cdiv(HWo, BLOCK_P)
        acc = tl.zeros([NGC * CGC, BLOCK_O], dtype=CDT)
        for tile in range(s, N * ntp, SPLITS):
            n = tile // ntp
            p = (tile % ntp) * BLOCK_P + tl.arange(0, BLOCK_P)
            pm = p < HWo
            cols = _columns(x_ptr, off_ptr, msk_ptr, n, gi, p, pm, c0, t, Cin, H, W, Wo, HWo, G, CPG, CG,
                            sh, sw, ph, pw, dh, dw, TAPS, KW, HAS_MASK, CDT, BLOCK_P, NGC, CGC)
            g = tl.load(g_ptr + (n.to(tl.int64) * Cout + gi * COG + oo[None, :]) * HWo + p[:, None],
                        mask=pm[:, None] & om[None, :], other=0.0)
            acc += _mm(tl.trans(cols), g, DOT, CDT, LDT)
        cc = c0 + tl.arange(0, NGC * CGC)
        rows = (((s * GROUPS + gi) * TAPS + t) * CPG + cc).to(tl.int64) * COG
        tl.store(part_ptr + rows[:, None] + oo[None, :], acc, mask=(cc < CPG)[:, None] & om[None, :])


class Config(NamedTuple):
    """Block sizes of one launch: BLOCK_P pixels x BLOCK_O output channels, K chunks of NGC runs of CGC channels
    (NGC * CGC = BLOCK_C), num_warps, DOT mode (see ``_mm``)."""
    block_p: int
    block_o: int
    ngc: int
    cgc: int
    num_warps: int
    dot: int


def _config(cpg: int, cog: int, cg: int, hw: int, dtype: torch.dtype, interpret: Optional[bool] = None) -> Config:
    """The launch configuration of the three kernels for a conv group of ``cpg`` -> ``cog`` channels, ``cg``
    channels per deformable group, ``hw`` output pixels; the only place it is chosen (the launchers and the AOT
    sweep, scripts/aot_triton.py, call it). Every tl.dot block dimension >= DOT_MIN (16: triton 3.6): K chunks of
    16 channels (fewer channels masked), BLOCK_O >= 16, BLOCK_P >= 16. A chunk's runs: the largest power of two
    dividing cg and cpg (so a run never straddles a deformable or conv group), at most 16."""
    interpret = INTERPRET if interpret is None else interpret
    bc = DOT_MIN
    run = math.gcd(math.gcd(cg, cpg), bc)
    run = 1 << (run.bit_length() - 1)
    dot = 0 if dtype == torch.float64 else (1 if dtype == torch.float32 or interpret else 2)
    if interpret:  # the interpreter runs one numpy op per tensor op: few, large programs
        return Config(min(4096, max(DOT_MIN, next_pow2(hw))), max(DOT_MIN, min(next_pow2(cog), 64)), bc // run,
                      run, 4, dot)
    if dot == 0:
        return Config(32, 16, bc // run, run, 4, 0)
    return Config(64, max(DOT_MIN, min(next_pow2(cog), 64)), bc // run, run, 4, dot)


def _ldt(dtype):
    return {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}.get(dtype, tl.float32)


def _split(input, offset, weight, mask, stride, padding, dilation):
    """Kernel operands: channels-last input, (groups, taps, cpg, cog) weight, contiguous offset / mask."""
    groups = input.shape[1] // weight.shape[1]
    cout, cpg, kh, kw = weight.shape
    xh = input.permute(0, 2, 3, 1).contiguous()
    wk = weight.reshape(groups, cout // groups, cpg, kh * kw).permute(0, 3, 2, 1).contiguous()
    return xh, offset.contiguous(), None if mask is None else mask.contiguous(), wk, groups


def _geom_args(input, offset, weight, stride, padding, dilation, ho, wo):
    n, cin, h, w = input.shape
    cout, cpg, kh, kw = weight.shape
    g = offset.shape[1] // (2 * kh * kw)
    groups = cin // cpg
    return (cin, h, w, cout, wo, ho * wo, g, groups, cpg, cout // groups, cin // g, stride[0], stride[1],
            padding[0], padding[1], dilation[0], dilation[1])


def _triton_fwd(input, offset, weight, bias, mask, stride, padding, dilation, ho, wo):
    n = input.shape[0]
    cout, cpg, kh, kw = weight.shape
    xh, off, msk, wk, groups = _split(input, offset, weight, mask, stride, padding, dilation)
    ga = _geom_args(input, offset, weight, stride, padding, dilation, ho, wo)
    cfg = _config(cpg, cout // groups, ga[10], ho * wo, input.dtype)
    out = torch.empty((n, cout, ho, wo), device=input.device, dtype=input.dtype)
    _fwd_kernel[(cdiv(ho * wo, cfg.block_p), cdiv(cout // groups, cfg.block_o), n * groups)](
        xh, off, msk, wk, bias, out, *ga, TAPS=kh * kw, KW=kw, HAS_MASK=mask is not None, HAS_BIAS=bias is not None,
        DOT=cfg.dot, CDT=tl_acc(input.dtype), LDT=_ldt(input.dtype), BLOCK_P=cfg.block_p, BLOCK_O=cfg.block_o,
        NGC=cfg.ngc, CGC=cfg.cgc, num_warps=cfg.num_warps)
    return out


def _weight_splits(blocks: int, tiles: int) -> int:
    """Pixel-tile splits of the weight-gradient kernel: enough programs to fill a GPU (~4 per SM of an H200),
    at most one per tile; a function of the shape only, so the sum order is fixed."""
    return max(1, min(tiles, 528 // max(1, blocks)))


def _triton_bwd(grad, input, offset, weight, mask, stride, padding, dilation, need):
    """(d/dinput, d/doffset, d/dweight, d/dmask); the bias gradient is grad's sum (the caller)."""
    n = input.shape[0]
    cout, cpg, kh, kw = weight.shape
    ho, wo = grad.shape[2:]
    xh, off, msk, wk, groups = _split(input, offset, weight, mask, stride, padding, dilation)
    ga = _geom_args(input, offset, weight, stride, padding, dilation, ho, wo)
    cog = cout // groups
    cfg = _config(cpg, cog, ga[10], ho * wo, input.dtype)
    cdt = acc_dtype(input.dtype)
    common = dict(TAPS=kh * kw, KW=kw, HAS_MASK=mask is not None, DOT=cfg.dot, CDT=tl_acc(input.dtype),
                  LDT=_ldt(input.dtype), BLOCK_P=cfg.block_p, BLOCK_O=cfg.block_o, NGC=cfg.ngc, CGC=cfg.cgc,
                  num_warps=cfg.num_warps)
    g = grad.contiguous()
    need_x, need_off, need_w, need_m = need
    need_m = need_m and mask is not None
    gx = torch.zeros(xh.shape, device=input.device, dtype=cdt) if need_x else None
    goff = torch.zeros(offset.shape, device=input.device, dtype=cdt) if need_off else None
    gm = torch.zeros(mask.shape, device=input.device, dtype=cdt) if need_m else None
    if need_x or need_off or need_m:
        # GPU: 8 warps and 16-pixel tiles. 4 warps sat at 255 registers and spilled at sm_80; 64-pixel tiles on 8
        # warps spilled 4 B in 16-bit at sm_80 (triton 3.9), 32-pixel tiles 12 B in 16-bit at sm_90 (triton 3.6, the
        # H200's; one deformable group, 16-channel runs); 16-pixel tiles on 8 warps spill nothing in 16-bit with
        # either triton at sm_90 or sm_80 -- scripts/aot_kernels.py, tests/ops/test_aot_kernels.py
        bp = cfg.block_p if INTERPRET else min(cfg.block_p, 16)
        _bwd_data_kernel[(cdiv(ho * wo, bp), n * groups)](
            xh, off, msk, wk, g, gx, goff, gm, *ga, NEED_X=need_x, NEED_OFF=need_off, NEED_MASK=need_m,
            **dict(common, BLOCK_P=bp, num_warps=cfg.num_warps if INTERPRET else 8))
    gw = None
    if need_w:
        nch = cdiv(cpg, cfg.ngc * cfg.cgc)
        oblocks = cdiv(cog, cfg.block_o)
        tiles = n * cdiv(ho * wo, cfg.block_p)
        splits = _weight_splits(kh * kw * nch * oblocks * groups, tiles)
        part = torch.empty((splits, groups, kh * kw, cpg, cog), device=input.device, dtype=cdt)
        _bwd_weight_kernel[(kh * kw * nch, oblocks, groups * splits)](
            xh, off, msk, g, part, n, *ga, nch, splits, **common)
        gw = part.sum(0).permute(0, 3, 2, 1).reshape(weight.shape)
    return (gx.permute(0, 3, 1, 2) if need_x else None), goff, gw, gm


# ============================================================================================ cuda
# csrc/deform_conv2d.cu (the ``cuda`` extension, or the ``cupy`` backend's NVRTC build of the same kernels): the
# operands of ``_split``; every tensor in input's dtype; gradients into acc buffers (fp32, fp64 for fp64).
_CUDA_TP, _CUDA_KC, _CUDA_TO = 64, 16, 64  # the kernels' pixel tile, K chunk and output block (csrc)


def _cuda_sizes(input, offset, weight, stride, padding, dilation, ho, wo):
    n, cin, h, w = input.shape
    cout, cpg, kh, kw = weight.shape
    groups, g = cin // cpg, offset.shape[1] // (2 * kh * kw)
    if n * groups > 65535:
        raise ValueError(f"deform_conv2d (cuda): batch x groups = {n * groups} > 65535")
    return (n, cin, h, w, cout, ho, wo, g, groups, kh, kw, stride[0], stride[1], padding[0], padding[1],
            dilation[0], dilation[1])


def _cuda_operands(input, offset, weight, mask, stride, padding, dilation):
    dt = input.dtype
    return _split(input, offset.to(dt), weight.to(dt), None if mask is None else mask.to(dt), stride, padding,
                  dilation)


def _cuda_fwd(input, offset, weight, bias, mask, stride, padding, dilation, ho, wo):
    xh, off, msk, wk, _ = _cuda_operands(input, offset, weight, mask, stride, padding, dilation)
    sizes = _cuda_sizes(input, offset, weight, stride, padding, dilation, ho, wo)
    out = torch.empty((input.shape[0], weight.shape[0], ho, wo), device=input.device, dtype=input.dtype)
    b = None if bias is None else bias.to(input.dtype).contiguous()
    _cuda.call("deform_conv2d_fwd", xh, off, msk, wk, b, out, *sizes, CUDA_DTYPE[input.dtype])
    return out


def _cuda_bwd(grad, input, offset, weight, mask, stride, padding, dilation, need):
    """(d/dinput, d/doffset, d/dweight, d/dmask) in the acc dtype, as ``_triton_bwd``."""
    ho, wo = grad.shape[2:]
    xh, off, msk, wk, groups = _cuda_operands(input, offset, weight, mask, stride, padding, dilation)
    sizes = _cuda_sizes(input, offset, weight, stride, padding, dilation, ho, wo)
    n = input.shape[0]
    cout, cpg, kh, kw = weight.shape
    cdt, dev = acc_dtype(input.dtype), input.device
    need_x, need_off, need_w, need_m = need
    need_m = need_m and mask is not None
    gx = torch.zeros(xh.shape, device=dev, dtype=cdt) if need_x else None
    goff = torch.zeros(offset.shape, device=dev, dtype=cdt) if need_off else None
    gm = torch.zeros(mask.shape, device=dev, dtype=cdt) if need_m else None
    part, splits = None, 1
    if need_w:
        blocks = kh * kw * cdiv(cpg, _CUDA_KC) * cdiv(cout // groups, _CUDA_TO) * groups
        splits = _weight_splits(blocks, n * cdiv(ho * wo, _CUDA_TP))
        part = (torch.empty if n else torch.zeros)((splits, groups, kh * kw, cpg, cout // groups), device=dev,
                                                   dtype=cdt)  # (no image: nothing launched, d/dweight = 0)
    if need_x or need_off or need_m or need_w:
        _cuda.call("deform_conv2d_bwd", xh, off, msk, wk, grad.to(input.dtype).contiguous(), gx, goff, gm, part,
                   *sizes, splits, CUDA_DTYPE[input.dtype])
    gw = part.sum(0).permute(0, 3, 2, 1).reshape(weight.shape) if need_w else None
    return (gx.permute(0, 3, 1, 2) if need_x else None), goff, gw, gm


# ============================================================================================ custom op
def _torch_bwd(grad, input, offset, weight, mask, stride, padding, dilation, need):
    """Explicit backward of the reference in torch, in fp32 (fp64 for fp64): d/dcolumns = weight^T grad, then the
    bilinear chain rule (scatter_add to the corners, corner differences for the offsets). Explicit because a
    custom op's implementation runs below autograd."""
    cdt = acc_dtype(input.dtype)
    n, cin, h, w = input.shape
    cout, cpg, kh, kw = weight.shape
    ho, wo = grad.shape[2:]
    taps, p = kh * kw, ho * wo
    groups, g = cin // cpg, offset.shape[1] // (2 * taps)
    x = input.to(cdt)
    m = mask.to(cdt).reshape(n, g, 1, taps, p) if mask is not None else None
    corners, ly, lx = _ref_corners(x, offset, g, kh, kw, stride, padding, dilation, (ho, wo))
    flat = x.reshape(n, g, cin // g, h * w)
    vals = [_take(flat, idx) * ok[:, :, None].to(cdt) for idx, _, ok in corners]  # zero outside
    raw = sum(v * wgt[:, :, None] for v, (_, wgt, _) in zip(vals, corners))  # (N, G, cg, taps, P), unmasked
    go = grad.to(cdt).reshape(n, groups, cout // groups, p)
    wm = weight.to(cdt).reshape(groups, cout // groups, cpg * taps)
    gcol = torch.einsum("gok,ngop->ngkp", wm, go).reshape(n, g, cin // g, taps, p)
    gx = goff = gw = gm = None
    if need[2]:
        cols = (raw if m is None else raw * m).reshape(n, groups, cpg * taps, p)
        gw = torch.einsum("ngop,ngkp->gok", go, cols).reshape(weight.shape)
    if need[3] and mask is not None:
        gm = (gcol * raw).sum(2).reshape(mask.shape)
    gcm = gcol if m is None else gcol * m
    if need[0]:
        acc = torch.zeros_like(flat)
        for idx, wgt, _ in corners:
            src = (gcm * wgt[:, :, None]).reshape(n, g, cin // g, taps * p)
            acc.scatter_add_(3, idx.reshape(n, g, 1, taps * p).expand_as(src), src)
        gx = acc.reshape(input.shape)
    if need[1]:
        v00, v01, v10, v11 = vals
        lye, lxe = ly[:, :, None], lx[:, :, None]
        gy = (gcm * ((1 - lxe) * (v10 - v00) + lxe * (v11 - v01))).sum(2)
        gxo = (gcm * ((1 - lye) * (v01 - v00) + lye * (v11 - v10))).sum(2)
        goff = torch.stack((gy, gxo), 3).reshape(offset.shape)
    return gx, goff, gw, gm


@torch.library.custom_op("vsr_engine::deform_conv2d", mutates_args=())
def _deform_op(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               mask: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
               backend: str) -> torch.Tensor:
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    _, _, _, _, _, (ho, wo) = _check(input, offset, weight, bias, stride, padding, dilation, mask)
    if backend == "triton":
        return _triton_fwd(input, offset, weight, bias, mask, stride, padding, dilation, ho, wo)
    if backend in ("cuda", "cupy"):
        return _cuda.routed(backend, _cuda_fwd)(input, offset, weight, bias, mask, stride, padding, dilation, ho, wo)
    return deform_conv2d_ref(input, offset, weight, bias, stride, padding, dilation, mask)


@_deform_op.register_fake
def _(input, offset, weight, bias, mask, stride, padding, dilation, backend):
    return input.new_empty((input.shape[0], weight.shape[0], offset.shape[2], offset.shape[3]))


@torch.library.custom_op("vsr_engine::deform_conv2d_backward", mutates_args=())
def _deform_bwd_op(grad: torch.Tensor, input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                   mask: Optional[torch.Tensor], stride: List[int], padding: List[int], dilation: List[int],
                   need: List[bool], backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d/dinput, d/doffset, d/dweight, d/dmask) in their inputs' dtypes; empty where not needed."""
    stride, padding, dilation = tuple(stride), tuple(padding), tuple(dilation)
    fn = {"triton": _triton_bwd, "cuda": _cuda_bwd,
          "cupy": _cuda.routed("cupy", _cuda_bwd)}.get(backend, _torch_bwd)
    got = fn(grad, input, offset, weight, mask, stride, padding, dilation, need)
    refs = (input, offset, weight, mask)
    return tuple(g.to(r.dtype).contiguous() if g is not None else input.new_empty(0) for g, r in zip(got, refs))


@_deform_bwd_op.register_fake
def _(grad, input, offset, weight, mask, stride, padding, dilation, need, backend):
    refs = (input, offset, weight, mask)
    return tuple(r.new_empty(r.shape) if (w and r is not None) else input.new_empty(0) for r, w in zip(refs, need))


def _setup_context(ctx, inputs, output):
    input, offset, weight, bias, mask, ctx.stride, ctx.padding, ctx.dilation, ctx.backend = inputs
    ctx.save_for_backward(input, offset, weight, mask)
    ctx.has_bias, ctx.has_mask = bias is not None, mask is not None


def _backward(ctx, grad):
    input, offset, weight, mask = ctx.saved_tensors
    ng = ctx.needs_input_grad
    need = [bool(ng[0]), bool(ng[1]), bool(ng[2]), bool(ng[4]) and ctx.has_mask]
    gb = grad.sum((0, 2, 3)) if (ng[3] and ctx.has_bias) else None
    gi, go, gw, gm = (_deform_bwd_op(grad.contiguous(), input, offset, weight, mask, ctx.stride, ctx.padding,
                                     ctx.dilation, need, ctx.backend) if any(need) else (None,) * 4)
    return ((gi if need[0] else None), (go if need[1] else None), (gw if need[2] else None), gb,
            (gm if need[3] else None), None, None, None, None)


_deform_op.register_autograd(_backward, setup_context=_setup_context)


# ============================================================================================ public
def deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                  dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Drop-in for ``torchvision.ops.deform_conv2d`` (same arguments, same result) on the active backend."""
    input, offset, weight, bias, mask = autocast_inputs(input, offset, weight, bias, mask)
    _, _, stride, padding, dilation, _ = _check(input, offset, weight, bias, stride, padding, dilation, mask)
    for name, t in (("offset", offset), ("weight", weight), ("bias", bias), ("mask", mask)):
        if t is not None and t.dtype != input.dtype:
            raise ValueError(f"deform_conv2d: {name} is {t.dtype}, input is {input.dtype} (use one dtype)")
    backend = pick("deform_conv2d", input)
    if backend == "torch" or input.numel() == 0:
        return deform_conv2d_ref(input, offset, weight, bias, stride, padding, dilation, mask)
    return _deform_op(input, offset, weight, bias, mask, list(stride), list(padding), list(dilation), backend)
