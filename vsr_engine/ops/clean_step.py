"""clean_step: one pass of RealBasicVSR's cleaning loop, x <- x + residue, with mean|residue| over the whole
tensor returned as a 0-d tensor on x's device (no host synchronisation inside the op), so a caller can keep the
stop decision on the device or read it once.

Fused: one read of x and residue, one write of x + residue; each program also writes its partial sum of
|residue| (accumulated in fp64), and the partials are summed in a fixed order: the mean is deterministic and
correctly rounded to fp32 in practice (what matters when it is compared with a threshold). The mean is fp32
(fp64 for fp64 input). Backward: d/dx = g, d/dresidue = g + g_mean * sign(residue) / numel.
Backends: triton, cuda (csrc/clean_step.cu), torch (``clean_step_ref``).
"""
from __future__ import annotations

from typing import Tuple

import torch

from . import _cuda
from ._backend import TRITON_OK, pick, tl, triton
from ._util import CUDA_DTYPE, acc_dtype, cdiv, check_float, interpret_or, next_pow2, tl_acc

__all__ = ["clean_step", "clean_step_ref"]


# ============================================================================================ reference
def clean_step_ref(x: torch.Tensor, residue: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    _check(x, residue)
    return x + residue, residue.abs().mean(dtype=acc_dtype(residue.dtype))


def _check(x: torch.Tensor, residue: torch.Tensor) -> None:
    if x.shape != residue.shape:
        raise ValueError(f"clean_step: shapes differ, {tuple(x.shape)} vs {tuple(residue.shape)}")
    if x.dtype != residue.dtype or x.device != residue.device:
        raise ValueError(f"clean_step: x is {x.dtype} on {x.device}, residue {residue.dtype} on {residue.device}")
    check_float("clean_step x", x)


def _torch_bwd(g_out, g_mean, residue):
    sgn = torch.sign(residue).to(acc_dtype(residue.dtype))
    return (g_out.to(sgn.dtype) + g_mean * sgn / residue.numel()).to(residue.dtype)


# ============================================================================================ triton
if TRITON_OK:
    @triton.jit
    def _fwd_kernel(x_ptr, r_ptr, out_ptr, part_ptr, numel, CDT: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < numel
        x = tl.load(x_ptr + offs, mask=m, other=0.0).to(CDT)
        r = tl.load(r_ptr + offs, mask=m, other=0.0).to(CDT)
        tl.store(out_ptr + offs, (x + r).to(out_ptr.dtype.element_ty), mask=m)
        tl.store(part_ptr + pid, tl.sum(tl.abs(r).to(tl.float64), axis=0))

    @triton.jit
    def _bwd_kernel(g_ptr, r_ptr, gm_ptr, gr_ptr, numel, CDT: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        m = offs < numel
        g = tl.load(g_ptr + offs, mask=m, other=0.0).to(CDT)
        r = tl.load(r_ptr + offs, mask=m, other=0.0).to(CDT)
        gm = tl.load(gm_ptr).to(CDT) / numel
        sgn = tl.where(r > 0, 1.0, tl.where(r < 0, -1.0, 0.0)).to(CDT)
        tl.store(gr_ptr + offs, (g + gm * sgn).to(gr_ptr.dtype.element_ty), mask=m)


def _block(n: int) -> int:
    # the interpreter runs one numpy op per tensor op: few, large programs (but no bigger than the tensor)
    return interpret_or(min(1 << 20, max(16, next_pow2(n))), 4096)


def _finish(partials, numel, dtype):
    return (partials.sum() / numel).to(acc_dtype(dtype))


def _triton_fwd(x, residue):
    out = torch.empty_like(x)
    n = x.numel()
    blk = _block(n)
    parts = torch.empty(max(1, cdiv(n, blk)), dtype=torch.float64, device=x.device)
    if n == 0:
        return out, torch.full((), float("nan"), dtype=acc_dtype(x.dtype), device=x.device)
    _fwd_kernel[(cdiv(n, blk),)](x, residue, out, parts, n, CDT=tl_acc(x.dtype), BLOCK=blk)
    return out, _finish(parts, n, x.dtype)


def _triton_bwd(g_out, g_mean, residue):
    gr = torch.empty_like(residue)
    n = residue.numel()
    if n:
        blk = _block(n)
        _bwd_kernel[(cdiv(n, blk),)](g_out, residue, g_mean, gr, n, CDT=tl_acc(residue.dtype), BLOCK=blk)
    return gr


# ============================================================================================ cuda
def _cuda_blocks(n: int) -> int:
    """Grid of the grid-stride kernel: a function of the size only, so the summation order is reproducible."""
    return max(1, min(1024, cdiv(n, 256 * 8)))


def _cuda_fwd(x, residue):
    out = torch.empty_like(x)
    n = x.numel()
    nb = _cuda_blocks(n)
    parts = torch.empty(nb, dtype=torch.float64, device=x.device)
    _cuda.call("clean_step_fwd", x, residue, out, parts, n, nb, CUDA_DTYPE[x.dtype])
    return out, _finish(parts, n, x.dtype)


def _cuda_bwd(g_out, g_mean, residue):
    gr = torch.empty_like(residue)
    _cuda.call("clean_step_bwd", g_out, residue, g_mean, gr, residue.numel(), CUDA_DTYPE[residue.dtype],
               CUDA_DTYPE[g_mean.dtype])
    return gr


# ============================================================================================ custom op
@torch.library.custom_op("vsr_engine::clean_step", mutates_args=())
def _clean_step_op(x: torch.Tensor, residue: torch.Tensor, backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    x, residue = x.contiguous(), residue.contiguous()
    if backend == "triton":
        return _triton_fwd(x, residue)
    if backend in ("cuda", "cupy"):
        return _cuda.routed(backend, _cuda_fwd)(x, residue)
    return clean_step_ref(x, residue)


@_clean_step_op.register_fake
def _(x, residue, backend):
    return x.new_empty(x.shape), x.new_empty((), dtype=acc_dtype(x.dtype))


@torch.library.custom_op("vsr_engine::clean_step_backward", mutates_args=())
def _clean_step_bwd_op(g_out: torch.Tensor, g_mean: torch.Tensor, residue: torch.Tensor,
                       backend: str) -> torch.Tensor:
    """d/dresidue (d/dx is g_out itself)."""
    g_out, residue = g_out.contiguous(), residue.contiguous()
    fn = {"triton": _triton_bwd, "cuda": _cuda_bwd,
          "cupy": _cuda.routed("cupy", _cuda_bwd)}.get(backend, _torch_bwd)
    return fn(g_out, g_mean, residue)


@_clean_step_bwd_op.register_fake
def _(g_out, g_mean, residue, backend):
    return residue.new_empty(residue.shape)


def _setup_context(ctx, inputs, output):
    _, residue, ctx.backend = inputs
    ctx.save_for_backward(residue)


def _backward(ctx, g_out, g_mean):
    (residue,) = ctx.saved_tensors
    g_res = _clean_step_bwd_op(g_out, g_mean, residue, ctx.backend) if ctx.needs_input_grad[1] else None
    return (g_out if ctx.needs_input_grad[0] else None), g_res, None


_clean_step_op.register_autograd(_backward, setup_context=_setup_context)


# ============================================================================================ public
def clean_step(x: torch.Tensor, residue: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(x + residue, mean|residue|)``; the mean is a 0-d fp32 tensor (fp64 for fp64 input) on x's device."""
    _check(x, residue)
    backend = pick("clean_step", x)
    if backend == "torch":
        return clean_step_ref(x, residue)
    return _clean_step_op(x, residue, backend)
