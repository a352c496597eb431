"""pixel_shuffle: ``F.pixel_shuffle`` (out[c, h*r+i, w*r+j] = in[c*r*r + i*r + j, h, w]) and the fused
bias + LeakyReLU + shuffle used by the BasicVSR tail (conv without bias -> this op = conv -> shuffle -> LReLU).

One custom op ``vsr_engine::pixel_shuffle(x, r, bias?, act, slope, backend)`` serves both public functions.
Triton: the forward walks the output flat (coalesced stores, gathered loads); the backward walks the input, so
each input gradient is written once (no atomics) and the bias gradient is a torch sum of it. 32-bit indexing
unless the tensor has 2^31 elements or more.
Backends: triton, cuda (csrc/pixel_shuffle.cu), torch (``pixel_shuffle_ref`` / ``pixel_shuffle_lrelu_ref``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import _cuda
from ._backend import TRITON_OK, pick, tl, triton
from ._util import CUDA_DTYPE, acc_dtype, cdiv, check_float, interpret_or, next_pow2, tl_acc
from ._autocast import autocast_inputs

__all__ = ["pixel_shuffle", "pixel_shuffle_ref", "pixel_shuffle_lrelu", "pixel_shuffle_lrelu_ref"]


# ============================================================================================ reference
def pixel_shuffle_ref(x: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    return F.pixel_shuffle(x, upscale_factor)


def pixel_shuffle_lrelu_ref(x: torch.Tensor, upscale_factor: int, bias: Optional[torch.Tensor] = None,
                            negative_slope: float = 0.1) -> torch.Tensor:
    """LeakyReLU(pixel_shuffle(x + bias)) -- bias is per input channel (the conv's bias)."""
    if bias is not None:
        x = x + bias.view(-1, 1, 1)
    return F.leaky_relu(F.pixel_shuffle(x, upscale_factor), negative_slope)


def _torch_fwd(x, r, bias, act, slope):
    if act:
        return pixel_shuffle_lrelu_ref(x, r, bias, slope)
    return pixel_shuffle_ref(x if bias is None else x + bias.view(-1, 1, 1), r)


def _torch_bwd(grad, x, r, bias, act, slope, need_bias):
    if act:  # leaky_relu's backward: slope where the pre-activation is <= 0
        pre = x if bias is None else x + bias.view(-1, 1, 1)
        grad = torch.where(F.pixel_shuffle(pre, r) > 0, grad, grad * slope)
    gx = F.pixel_unshuffle(grad, r)
    gb = gx.sum((0, 2, 3), dtype=acc_dtype(gx.dtype)).to(bias.dtype) if need_bias else gx.new_empty(0)
    return gx, gb


# ============================================================================================ triton
if TRITON_OK:
    @triton.jit
    def _fwd_kernel(total, x_ptr, b_ptr, out_ptr, C, H, W, R: tl.constexpr, HAS_BIAS: tl.constexpr,
                    ACT: tl.constexpr, slope, CDT: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
        """BLOCK consecutive output elements (flat over N*C*H*R*W*R): coalesced stores, gathered loads."""
        pid = tl.program_id(0)
        if INT64:
            q = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        else:
            q = pid * BLOCK + tl.arange(0, BLOCK)
        qm = q < total
        OW = W * R
        plane = H * R * OW
        nc = q // plane  # n * C + c
        rem = q % plane
        oh = rem // OW
        ow = rem % OW
        k = (oh % R) * R + (ow % R)  # sub-channel i*r + j
        src = (nc * (R * R) + k) * (H * W) + (oh // R) * W + (ow // R)
        v = tl.load(x_ptr + src, mask=qm, other=0.0).to(CDT)
        if HAS_BIAS:
            v += tl.load(b_ptr + (nc % C) * (R * R) + k, mask=qm, other=0.0).to(CDT)
        if ACT:
            v = tl.where(v > 0, v, v * slope)
        tl.store(out_ptr + q, v.to(out_ptr.dtype.element_ty), mask=qm)

    @triton.jit
    def _bwd_kernel(total, g_ptr, x_ptr, b_ptr, gx_ptr, C, H, W, R: tl.constexpr, HAS_BIAS: tl.constexpr,
                    ACT: tl.constexpr, slope, CDT: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
        """BLOCK consecutive input elements (flat over N*C*R*R*H*W): each input gradient written once."""
        pid = tl.program_id(0)
        if INT64:
            p = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        else:
            p = pid * BLOCK + tl.arange(0, BLOCK)
        pm = p < total
        nk = p // (H * W)  # (n * C + c) * R * R + k
        hw = p % (H * W)
        k = nk % (R * R)
        nc = nk // (R * R)
        h = hw // W
        w = hw % W
        OW = W * R
        dst = nc * (H * R * OW) + (h * R + k // R) * OW + w * R + k % R
        g = tl.load(g_ptr + dst, mask=pm, other=0.0).to(CDT)
        if ACT:  # the sign of the pre-activation x + bias
            pre = tl.load(x_ptr + p, mask=pm, other=0.0).to(CDT)
            if HAS_BIAS:
                pre += tl.load(b_ptr + (nc % C) * (R * R) + k, mask=pm, other=0.0).to(CDT)
            g = tl.where(pre > 0, g, g * slope)
        tl.store(gx_ptr + p, g.to(gx_ptr.dtype.element_ty), mask=pm)


def _launch_config(total: int) -> Tuple[int, bool]:
    """(BLOCK, INT64) for ``total`` elements; the interpreter runs one numpy op per tensor op: few, large
    programs (no bigger than the tensor). Also enumerated by the AOT sweep (scripts/aot_triton.py)."""
    blk = interpret_or(min(1 << 20, max(16, next_pow2(total))), 1024)
    return blk, total + blk >= 2 ** 31


def _launch(kernel, total: int, *args, **kw):
    blk, int64 = _launch_config(total)
    kernel[(cdiv(total, blk),)](total, *args, INT64=int64, BLOCK=blk, **kw)


def _triton_fwd(x, r, bias, act, slope):
    n, cin, h, w = x.shape
    c = cin // (r * r)
    out = x.new_empty((n, c, h * r, w * r))
    _launch(_fwd_kernel, out.numel(), x, bias, out, c, h, w, R=r, HAS_BIAS=bias is not None, ACT=bool(act),
            slope=float(slope), CDT=tl_acc(out.dtype))
    return out


def _x_shape(grad, r):
    n, c, hr, wr = grad.shape
    return n, c * r * r, hr // r, wr // r


def _triton_bwd(grad, x, r, bias, act, slope, need_bias):
    n, cin, h, w = _x_shape(grad, r)
    gx = torch.empty((n, cin, h, w), dtype=acc_dtype(grad.dtype) if need_bias else grad.dtype, device=grad.device)
    _launch(_bwd_kernel, gx.numel(), grad, x, bias, gx, cin // (r * r), h, w, R=r, HAS_BIAS=bias is not None,
            ACT=bool(act), slope=float(slope), CDT=tl_acc(grad.dtype))
    if need_bias:
        return gx.to(grad.dtype), gx.sum((0, 2, 3)).to(bias.dtype)
    return gx, grad.new_empty(0)


# ============================================================================================ cuda
def _cuda_fwd(x, r, bias, act, slope):
    n, cin, h, w = x.shape
    out = x.new_empty((n, cin // (r * r), h * r, w * r))
    _cuda.call("pixel_shuffle_fwd", x, bias, out, n, cin // (r * r), h, w, r, bool(act), float(slope),
               CUDA_DTYPE[x.dtype])
    return out


def _cuda_bwd(grad, x, r, bias, act, slope, need_bias):
    n, cin, h, w = _x_shape(grad, r)
    gx = torch.empty((n, cin, h, w), dtype=acc_dtype(grad.dtype) if need_bias else grad.dtype, device=grad.device)
    _cuda.call("pixel_shuffle_bwd", grad, x, bias, gx, n, cin // (r * r), h, w, r, bool(act), float(slope),
               CUDA_DTYPE[grad.dtype], CUDA_DTYPE[gx.dtype])
    if need_bias:
        return gx.to(grad.dtype), gx.sum((0, 2, 3)).to(bias.dtype)
    return gx, grad.new_empty(0)


# ============================================================================================ custom op
@torch.library.custom_op("vsr_engine::pixel_shuffle", mutates_args=())
def _pixel_shuffle_op(x: torch.Tensor, upscale_factor: int, bias: Optional[torch.Tensor], act: bool,
                      negative_slope: float, backend: str) -> torch.Tensor:
    x = x.contiguous()
    bias = None if bias is None else bias.contiguous()
    if backend == "triton":
        return _triton_fwd(x, upscale_factor, bias, act, negative_slope)
    if backend in ("cuda", "cupy"):
        return _cuda.routed(backend, _cuda_fwd)(x, upscale_factor, bias, act, negative_slope)
    return _torch_fwd(x, upscale_factor, bias, act, negative_slope)


@_pixel_shuffle_op.register_fake
def _(x, upscale_factor, bias, act, negative_slope, backend):
    n, cin, h, w = x.shape
    r = upscale_factor
    return x.new_empty((n, cin // (r * r), h * r, w * r))


@torch.library.custom_op("vsr_engine::pixel_shuffle_backward", mutates_args=())
def _pixel_shuffle_bwd_op(grad: torch.Tensor, x: Optional[torch.Tensor], upscale_factor: int,
                          bias: Optional[torch.Tensor], act: bool, negative_slope: float, need_bias: bool,
                          backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """(d/dx, d/dbias); d/dbias is empty when not asked for. ``x`` is read only with the activation."""
    grad = grad.contiguous()
    x = None if x is None else x.contiguous()
    bias = None if bias is None else bias.contiguous()
    if act and x is None:
        raise ValueError("pixel_shuffle_backward: the activation's gradient needs x")
    need_bias = need_bias and bias is not None
    fn = {"triton": _triton_bwd, "cuda": _cuda_bwd,
          "cupy": _cuda.routed("cupy", _cuda_bwd)}.get(backend, _torch_bwd)
    return fn(grad, x, upscale_factor, bias, act, negative_slope, need_bias)


@_pixel_shuffle_bwd_op.register_fake
def _(grad, x, upscale_factor, bias, act, negative_slope, need_bias, backend):
    nb = need_bias and bias is not None
    return grad.new_empty(_x_shape(grad, upscale_factor)), (bias.new_empty(bias.shape) if nb else grad.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, ctx.r, bias, ctx.act, ctx.slope, ctx.backend = inputs
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x if ctx.act else None, bias)  # x only for the sign of the pre-activation


def _backward(ctx, grad):
    x, bias = ctx.saved_tensors
    need_bias = ctx.has_bias and ctx.needs_input_grad[2]
    gx, gb = _pixel_shuffle_bwd_op(grad, x, ctx.r, bias, ctx.act, ctx.slope, need_bias, ctx.backend)
    return gx, None, (gb if need_bias else None), None, None, None


_pixel_shuffle_op.register_autograd(_backward, setup_context=_setup_context)


# ============================================================================================ public
def _check(x: torch.Tensor, r: int, bias: Optional[torch.Tensor]) -> None:
    if x.dim() < 3:
        raise ValueError(f"pixel_shuffle expects (*, C*r*r, H, W), got {tuple(x.shape)}")
    if int(r) != r or r < 1 or x.shape[-3] % (r * r) != 0:
        raise ValueError(f"pixel_shuffle: channels {x.shape[-3]} not divisible by upscale_factor^2 = {r * r}")
    check_float("pixel_shuffle x", x)
    if bias is not None and (bias.numel() != x.shape[-3] or bias.device != x.device):
        raise ValueError(f"pixel_shuffle_lrelu: bias of {bias.numel()} values on {bias.device} for "
                         f"{x.shape[-3]} channels on {x.device}")


def _run(x, r, bias, act, slope):
    lead = x.shape[:-3]
    x4 = x.reshape(-1, *x.shape[-3:]) if x.dim() != 4 else x
    out = _pixel_shuffle_op(x4, int(r), bias, act, float(slope), pick("pixel_shuffle", x))
    return out.reshape(*lead, *out.shape[-3:]) if x.dim() != 4 else out


def pixel_shuffle(x: torch.Tensor, upscale_factor: int) -> torch.Tensor:
    """``F.pixel_shuffle`` on the active backend."""
    _check(x, upscale_factor, None)
    if pick("pixel_shuffle", x) == "torch" or x.numel() == 0:
        return pixel_shuffle_ref(x, upscale_factor)
    return _run(x, upscale_factor, None, False, 1.0)


def pixel_shuffle_lrelu(x: torch.Tensor, upscale_factor: int, bias: Optional[torch.Tensor] = None,
                        negative_slope: float = 0.1) -> torch.Tensor:
    """LeakyReLU(pixel_shuffle(x + bias), negative_slope) in one pass; ``bias`` per input channel."""
    x, bias = autocast_inputs(x, bias)
    _check(x, upscale_factor, bias)
    if pick("pixel_shuffle", x) == "torch" or x.numel() == 0:
        return pixel_shuffle_lrelu_ref(x, upscale_factor, bias, negative_slope)
    return _run(x, upscale_factor, bias, True, negative_slope)
