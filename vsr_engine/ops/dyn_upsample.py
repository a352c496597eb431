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
Backends: triton (``_fwd_kernel``, ``_bwd_kernel`` + ``_bwd_x_kernel``), cuda / cupy (csrc/dyn_upsample.cu), torch
(``dyn_upsample_ref`` and ``_torch_bwd``, its explicit backward). The kernels read each logit once per call
and recompute the softmax in the backward instead of storing it. The backward gives d/dres (TF space-to-depth of the
output gradient), d/df (softmax Jacobian: w_t * (dL/dw_t - sum_t' w_t' dL/dw_t')) and d/dx in two deterministic
passes: per low-res pixel a_{c,t} = sum_k g_{c,k} w_{t,k} (fp32 / fp64 buffer (N, C, 25, H, W)), then d/dx gathers
the 25 a's that read each pixel -- no atomics, bit-reproducible.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from . import _cuda
from ._autocast import autocast_inputs
from ._backend import TRITON_OK, pick, tl, triton
from ._util import CUDA_DTYPE, acc_dtype, cdiv, check_float, interpret_or, next_pow2, tl_acc

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



# ============================================================================================ triton
# The kernels hold every colour channel of a 5x5 neighbourhood at once ([BLOCK_C, 32, BLOCK_P]: taps padded to 32);
# BLOCK_C = next_pow2(C) up to MAX_C_TRITON -- more channels are split into groups by the public function.
MAX_C_TRITON = 4

if TRITON_OK:
    @triton.jit
    def _patch(x_ptr, n, p, pm, C, H, W, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, CDT: tl.constexpr):
        """x's 5x5 zero-padded neighbourhoods of pixels p: [BLOCK_C, 32, BLOCK_P], tap t = dy*5 + dx (t < 25)."""
        t = tl.arange(0, 32)
        hh = p // W
        ww = p % W
        sy = hh[None, :] + (t // 5)[:, None] - 2
        sx = ww[None, :] + (t % 5)[:, None] - 2
        ok = (t < 25)[:, None] & pm[None, :] & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        cc = tl.arange(0, BLOCK_C)
        base = x_ptr + (n.to(tl.int64) * C + cc.to(tl.int64))[:, None, None] * (H * W)
        return tl.load(base + (sy * W + sx)[None, :, :], mask=(cc < C)[:, None, None] & ok[None, :, :],
                       other=0.0).to(CDT)

    @triton.jit
    def _softmax_taps(f_ptr, n, k, p, pm, HW, RR: tl.constexpr, BLOCK_P: tl.constexpr, CDT: tl.constexpr):
        """softmax over the 25 taps of sub-pixel k: [32, BLOCK_P] (rows >= 25 are 0). Channel t*RR + k (TF order)."""
        t = tl.arange(0, 32)
        tm = t < 25
        ptr = f_ptr + n.to(tl.int64) * (25 * RR) * HW + (t * RR + k).to(tl.int64)[:, None] * HW + p[None, :]
        lg = tl.load(ptr, mask=tm[:, None] & pm[None, :], other=0.0).to(CDT)
        lg = tl.where(tm[:, None], lg, float("-inf"))
        e = tl.exp(lg - tl.max(lg, axis=0)[None, :])
        return e / tl.sum(e, axis=0)[None, :]

    @triton.jit
    def _fwd_kernel(x_ptr, f_ptr, res_ptr, out_ptr, C, H, W, R: tl.constexpr, CDT: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """BLOCK_P low-res pixels of image program_id(1), every sub-pixel k and every channel."""
        n = tl.program_id(1)
        HW = H * W
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        xs = _patch(x_ptr, n, p, pm, C, H, W, BLOCK_C, BLOCK_P, CDT)
        cc = tl.arange(0, BLOCK_C)
        m2 = (cc < C)[:, None] & pm[None, :]
        hh = p // W
        ww = p % W
        img = n.to(tl.int64) * C
        for k in range(R * R):
            wt = _softmax_taps(f_ptr, n, k, p, pm, HW, R * R, BLOCK_P, CDT)
            y = tl.sum(xs * wt[None, :, :], axis=1)  # [BLOCK_C, BLOCK_P]
            rp = res_ptr + (img * (R * R) + k * C + cc.to(tl.int64))[:, None] * HW + p[None, :]
            y += tl.load(rp, mask=m2, other=0.0).to(CDT)
            oy = hh * R + k // R
            ox = ww * R + k % R
            op = out_ptr + (img + cc.to(tl.int64))[:, None] * (HW * R * R) + (oy * (W * R) + ox)[None, :]
            tl.store(op, y.to(out_ptr.dtype.element_ty), mask=m2)

    @triton.jit
    def _bwd_kernel(x_ptr, f_ptr, g_ptr, gf_ptr, gres_ptr, a_ptr, C, H, W, R: tl.constexpr, CDT: tl.constexpr,
                    NEED_X: tl.constexpr, NEED_F: tl.constexpr, NEED_RES: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """Per low-res pixel: d/dres, d/df (softmax recomputed) and a[c, t] = sum_k g[c, k] w[t, k] for d/dx."""
        n = tl.program_id(1)
        HW = H * W
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        cc = tl.arange(0, BLOCK_C)
        m2 = (cc < C)[:, None] & pm[None, :]
        hh = p // W
        ww = p % W
        img = n.to(tl.int64) * C
        t = tl.arange(0, 32)
        if NEED_F:
            xs = _patch(x_ptr, n, p, pm, C, H, W, BLOCK_C, BLOCK_P, CDT)
        acc = tl.zeros([BLOCK_C, 32, BLOCK_P], dtype=CDT)
        for k in range(R * R):
            oy = hh * R + k // R
            ox = ww * R + k % R
            gp = g_ptr + (img + cc.to(tl.int64))[:, None] * (HW * R * R) + (oy * (W * R) + ox)[None, :]
            g = tl.load(gp, mask=m2, other=0.0).to(CDT)  # [BLOCK_C, BLOCK_P]
            if NEED_RES:
                rp = gres_ptr + (img * (R * R) + k * C + cc.to(tl.int64))[:, None] * HW + p[None, :]
                tl.store(rp, g.to(gres_ptr.dtype.element_ty), mask=m2)
            if NEED_F or NEED_X:
                wt = _softmax_taps(f_ptr, n, k, p, pm, HW, R * R, BLOCK_P, CDT)
                if NEED_F:
                    gw = tl.sum(g[:, None, :] * xs, axis=0)  # dL/dw_t: [32, BLOCK_P]
                    s = tl.sum(wt * gw, axis=0)
                    gf = wt * (gw - s[None, :])
                    fp = gf_ptr + n.to(tl.int64) * (25 * R * R) * HW + (t * (R * R) + k).to(tl.int64)[:, None] * HW \
                        + p[None, :]
                    tl.store(fp, gf.to(gf_ptr.dtype.element_ty), mask=(t < 25)[:, None] & pm[None, :])
                if NEED_X:
                    acc += g[:, None, :] * wt[None, :, :]
        if NEED_X:
            ap = a_ptr + ((img + cc.to(tl.int64))[:, None, None] * 25 + t[None, :, None]) * HW + p[None, None, :]
            tl.store(ap, acc, mask=(cc < C)[:, None, None] & (t < 25)[None, :, None] & pm[None, None, :])

    @triton.jit
    def _bwd_x_kernel(a_ptr, gx_ptr, C, H, W, CDT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """gx[c, q] = sum_t a[c, t, q - (dy - 2, dx - 2)] over the neighbours inside the frame (a gather)."""
        n = tl.program_id(1)
        HW = H * W
        q = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        qm = q < HW
        t = tl.arange(0, 32)
        py = (q // W)[None, :] - (t // 5)[:, None] + 2
        px = (q % W)[None, :] - (t % 5)[:, None] + 2
        ok = (t < 25)[:, None] & qm[None, :] & (py >= 0) & (py < H) & (px >= 0) & (px < W)
        cc = tl.arange(0, BLOCK_C)
        img = n.to(tl.int64) * C + cc.to(tl.int64)
        ap = a_ptr + (img[:, None, None] * 25 + t[None, :, None]) * HW + (py * W + px)[None, :, :]
        a = tl.load(ap, mask=(cc < C)[:, None, None] & ok[None, :, :], other=0.0).to(CDT)
        gx = tl.sum(a, axis=1)
        tl.store(gx_ptr + img[:, None] * HW + q[None, :], gx.to(gx_ptr.dtype.element_ty),
                 mask=(cc < C)[:, None] & qm[None, :])


def _launch_config(c: int, hw: int, bwd: bool = False) -> Tuple[int, int, int]:
    """(BLOCK_C, BLOCK_P, num_warps). GPU: 64 pixels forward, 32 backward (it holds the patch and the d/dx
    accumulator, [4, 32, BLOCK_P] each), 4 warps -- no spills at sm_80 / sm_90 (scripts/aot_kernels.py). The
    interpreter: one numpy op per tensor op, so few large programs."""
    bc = min(next_pow2(c), MAX_C_TRITON)
    return interpret_or((bc, min(1 << 12, max(16, next_pow2(hw))), 4), (bc, 32 if bwd else 64, 4))


def _triton_fwd(x, f, res, r):
    n, c, h, w = x.shape
    out = torch.empty((n, c, h * r, w * r), dtype=x.dtype, device=x.device)
    bc, bp, nw = _launch_config(c, h * w)
    if out.numel():
        _fwd_kernel[(cdiv(h * w, bp), n)](x, f, res, out, c, h, w, R=r, CDT=tl_acc(x.dtype), BLOCK_C=bc,
                                          BLOCK_P=bp, num_warps=nw)
    return out


def _grad_buffers(grad, x, f, res, need):
    n, c, h, w = x.shape
    cdt = acc_dtype(x.dtype)
    gf = torch.empty_like(f) if need[1] else None
    gres = torch.empty_like(res) if need[2] else None
    a = torch.empty((n, c, 25, h, w), dtype=cdt, device=x.device) if need[0] else None
    return gf, gres, a


def _triton_bwd(grad, x, f, res, r, need):
    n, c, h, w = x.shape
    gf, gres, a = _grad_buffers(grad, x, f, res, need)
    gx = torch.empty_like(x) if need[0] else None
    if x.numel() and any(need):
        bc, bp, nw = _launch_config(c, h * w, bwd=True)
        _bwd_kernel[(cdiv(h * w, bp), n)](x, f, grad, gf, gres, a, c, h, w, R=r, CDT=tl_acc(x.dtype),
                                          NEED_X=bool(need[0]), NEED_F=bool(need[1]), NEED_RES=bool(need[2]),
                                          BLOCK_C=bc, BLOCK_P=bp, num_warps=nw)
        if need[0]:
            bc, bp, nw = _launch_config(c, h * w)
            _bwd_x_kernel[(cdiv(h * w, bp), n)](a, gx, c, h, w, CDT=tl_acc(x.dtype), BLOCK_C=bc, BLOCK_P=bp,
                                                num_warps=nw)
    return _out_grads(x, f, res, gx, gf, gres)


def _out_grads(x, f, res, gx, gf, gres):
    return (x.new_empty(0) if gx is None else gx, f.new_empty(0) if gf is None else gf,
            res.new_empty(0) if gres is None else gres)


# ============================================================================================ cuda
def _cuda_fwd(x, f, res, r):
    n, c, h, w = x.shape
    out = torch.empty((n, c, h * r, w * r), dtype=x.dtype, device=x.device)
    _cuda.call("dyn_upsample_fwd", x, f, res, out, n, c, h, w, r, CUDA_DTYPE[x.dtype])
    return out


def _cuda_bwd(grad, x, f, res, r, need):
    n, c, h, w = x.shape
    gf, gres, a = _grad_buffers(grad, x, f, res, need)
    gx = torch.empty_like(x) if need[0] else None
    _cuda.call("dyn_upsample_bwd", x, f, grad, gx, gf, gres, a, n, c, h, w, r, CUDA_DTYPE[x.dtype])
    return _out_grads(x, f, res, gx, gf, gres)


# ============================================================================================ torch
def _torch_bwd(grad, x, f, res, r, need):
    """Explicit backward of ``dyn_upsample_ref`` (custom-op bodies run below autograd): d/dres = TF space-to-depth
    of the output gradient, d/df = the softmax Jacobian of dL/dw, d/dx = fold (the adjoint of unfold) of
    a[c, t] = sum_k g[c, k] w[t, k]."""
    n, c, h, w = x.shape
    cdt = acc_dtype(x.dtype)
    g = grad.to(cdt).view(n, c, h, r, w, r).permute(0, 3, 5, 1, 2, 4).reshape(n, r * r, c, h, w)  # [k, c]
    gx = gf = gres = None
    if need[2]:
        gres = g.reshape(n, r * r * c, h, w).to(res.dtype)
    if need[0] or need[1]:
        wts = torch.softmax(f.to(cdt).view(n, TAPS, r * r, h, w), dim=1)
        if need[1]:
            patches = F.unfold(x.to(cdt), KS, padding=KS // 2).view(n, c, TAPS, h, w)
            gw = torch.einsum("nkcyx,nctyx->ntkyx", g, patches)
            gf = (wts * (gw - (wts * gw).sum(1, keepdim=True))).reshape(f.shape).to(f.dtype)
        if need[0]:
            a = torch.einsum("nkcyx,ntkyx->nctyx", g, wts).reshape(n, c * TAPS, h * w)
            gx = F.fold(a, (h, w), KS, padding=KS // 2).to(x.dtype)
    return _out_grads(x, f, res, gx, gf, gres)


# ============================================================================================ custom op
@torch.library.custom_op("vsr_engine::dyn_upsample", mutates_args=())
def _dyn_upsample_op(x: torch.Tensor, f: torch.Tensor, res: torch.Tensor, scale: int,
                     backend: str) -> torch.Tensor:
    x, f, res = x.contiguous(), f.contiguous(), res.contiguous()
    if backend == "triton":
        return _triton_fwd(x, f, res, scale)
    if backend in ("cuda", "cupy"):
        return _cuda.routed(backend, _cuda_fwd)(x, f, res, scale)
    return dyn_upsample_ref(x, f, res, scale)


@_dyn_upsample_op.register_fake
def _(x, f, res, scale, backend):
    n, c, h, w = x.shape
    return x.new_empty((n, c, h * scale, w * scale))


@torch.library.custom_op("vsr_engine::dyn_upsample_backward", mutates_args=())
def _dyn_upsample_bwd_op(grad: torch.Tensor, x: torch.Tensor, f: torch.Tensor, res: torch.Tensor, scale: int,
                         need: List[bool], backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d/dx, d/df, d/dres) for need = [x, f, res]; a gradient not asked for comes back as an empty tensor."""
    grad, x, f, res = grad.contiguous(), x.contiguous(), f.contiguous(), res.contiguous()
    fn = {"triton": _triton_bwd, "cuda": _cuda_bwd,
          "cupy": _cuda.routed("cupy", _cuda_bwd)}.get(backend, _torch_bwd)
    return fn(grad, x, f, res, scale, [bool(v) for v in need])


@_dyn_upsample_bwd_op.register_fake
def _(grad, x, f, res, scale, need, backend):
    return tuple(t.new_empty(t.shape) if nd else t.new_empty(0) for t, nd in zip((x, f, res), need))


def _setup_context(ctx, inputs, output):
    x, f, res, ctx.scale, ctx.backend = inputs
    ctx.save_for_backward(x, f, res)


def _backward(ctx, grad):
    x, f, res = ctx.saved_tensors
    need = [bool(v) for v in ctx.needs_input_grad[:3]]
    gx, gf, gres = _dyn_upsample_bwd_op(grad, x, f, res, ctx.scale, need, ctx.backend)
    return (gx if need[0] else None), (gf if need[1] else None), (gres if need[2] else None), None, None


_dyn_upsample_op.register_autograd(_backward, setup_context=_setup_context)


# ============================================================================================ public
def dyn_upsample(x: torch.Tensor, f: torch.Tensor, res: torch.Tensor, scale: int) -> torch.Tensor:
    """DUF's output stage: x (N, C, H, W) centre frame, f (N, 25*r*r, H, W) raw filter logits, res (N, C*r*r, H, W)
    raw residual, both in the official TF channel order (module docstring) -> (N, C, rH, rW). Runs on the active
    backend; differentiable in x, f and res (drop-in for training); under autocast the inputs are cast first."""
    x, f, res = autocast_inputs(x, f, res)
    r = _check(x, f, res, scale)
    backend = pick("dyn_upsample", x)
    if backend == "torch" or x.numel() == 0:
        return dyn_upsample_ref(x, f, res, r)
    f, res = f.to(x.dtype), res.to(x.dtype)  # the kernels read one dtype
    c = x.shape[1]
    if backend == "triton" and c > MAX_C_TRITON:  # channel groups (same filters), residual channels (k*C + c)
        n, _, h, w = x.shape
        rv = res.view(n, r * r, c, h, w)
        outs = [_dyn_upsample_op(x[:, c0:c0 + MAX_C_TRITON], f,
                                 rv[:, :, c0:c0 + MAX_C_TRITON].reshape(n, -1, h, w), r, backend)
                for c0 in range(0, c, MAX_C_TRITON)]
        return torch.cat(outs, dim=1)
    return _dyn_upsample_op(x, f, res, r, backend)
