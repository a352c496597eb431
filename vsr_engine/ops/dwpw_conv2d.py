"""dwpw_conv2d: fused depthwise k x k conv + pointwise 1 x 1 conv (+ activation, + residual).

    dwpw_conv2d(x, dw_weight, dw_bias, pw_weight, pw_bias, activation=None, residual=None)
      == act(conv2d(conv2d(x, dw_weight, dw_bias, padding=k//2, groups=C), pw_weight, pw_bias)) + residual

x (N, C, H, W); dw_weight (C, 1, k, k), k odd; pw_weight (O, C, 1, 1) (or (O, C)); biases optional;
activation None | "relu" | "lrelu" (LeakyReLU 0.1; "leaky_relu" accepted); residual (N, O, H, W) or None.
The building block of DSCVSR's depthwise-separable dense blocks.

Forward kernel: one program = a tile of pixels x a block of output channels; the depthwise result for a chunk of
input channels lives only in registers and is multiplied straight into the pointwise accumulator (``tl.dot`` with
16-channel chunks, fewer channels padded to 16: triton 3.6 needs every dot block dimension >= 16; in fp64 a
broadcast multiply + ``tl.sum``), so the C x H x W intermediate never touches memory. Bias, activation and
residual are applied in the epilogue.
Backward (recomputes, stores nothing extra in forward):
  1. g_z = g_out * act'(z): the forward kernel in gradient mode (recomputes z);
  2. y = depthwise(x) (kernel), then the 1x1 parts are plain GEMMs: d/dpw = g_z y^T, d/dy = pw^T g_z (torch);
  3. d/dx (transposed depthwise) and per-tile partial sums of d/ddw_weight in one kernel; partials summed in
     a fixed order (deterministic, no atomics).
Backends: triton, cuda (csrc/dwpw_conv2d.cu), torch (``dwpw_conv2d_ref``).
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

from . import _cuda
from ._backend import INTERPRET, TRITON_OK, pick, tl, triton
from ._util import CUDA_DTYPE, DOT_MIN, acc_dtype, cdiv, check_float, next_pow2, tl_acc
from ._autocast import autocast_inputs

__all__ = ["dwpw_conv2d", "dwpw_conv2d_ref"]

ACTS = {None: 0, "none": 0, "relu": 1, "lrelu": 2, "leaky_relu": 2}
LRELU_SLOPE = 0.1


def _act_code(activation) -> int:
    if activation not in ACTS:
        raise ValueError(f"dwpw_conv2d: activation must be None, 'relu' or 'lrelu', got {activation!r}")
    return ACTS[activation]


# ============================================================================================ reference
def dwpw_conv2d_ref(x: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
                    pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor], activation: Optional[str] = None,
                    residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    act = _act_code(activation)
    k = dw_weight.shape[-1]
    y = F.conv2d(x, dw_weight, dw_bias, padding=k // 2, groups=x.shape[1])
    z = F.conv2d(y, pw_weight.reshape(pw_weight.shape[0], -1, 1, 1), pw_bias)
    if act == 1:
        z = F.relu(z)
    elif act == 2:
        z = F.leaky_relu(z, LRELU_SLOPE)
    return z if residual is None else z + residual


def _act_grad(z: torch.Tensor, g: torch.Tensor, act: int) -> torch.Tensor:
    if act == 1:
        return torch.where(z > 0, g, torch.zeros_like(g))
    if act == 2:
        return torch.where(z > 0, g, g * LRELU_SLOPE)
    return g


def _torch_fwd(x, dww, dwb, pww, pwb, res, act):
    return dwpw_conv2d_ref(x, dww, dwb, pww, pwb, [None, "relu", "lrelu"][act], res)


def _torch_bwd(g, x, dww, dwb, pww, pwb, act, need):
    """Explicit backward in torch (aten.convolution_backward), computed in fp32 (fp64 for fp64)."""
    cdt = acc_dtype(x.dtype)
    c, k, o = x.shape[1], dww.shape[-1], pww.shape[0]
    xc, dwc, pwc = x.to(cdt), dww.to(cdt), pww.reshape(o, c, 1, 1).to(cdt)
    y = F.conv2d(xc, dwc, None if dwb is None else dwb.to(cdt), padding=k // 2, groups=c)
    z = F.conv2d(y, pwc, None if pwb is None else pwb.to(cdt))
    gz = _act_grad(z, g.to(cdt), act)
    conv_bwd = torch.ops.aten.convolution_backward
    gy, gpw, gpwb = conv_bwd(gz, y, pwc, [o], [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
                             [True, need[3], need[4] and pwb is not None])
    gx, gdw, gdwb = conv_bwd(gy, xc, dwc, [c], [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], c,
                             [need[0], need[1], need[2] and dwb is not None])
    return _pack(x, dww, dwb, pww, pwb, need, gx, gdw, gdwb, gpw, gpwb)


def _pack(x, dww, dwb, pww, pwb, need, gx, gdw, gdwb, gpw, gpwb):
    """Gradients in their inputs' dtypes and shapes; empty tensors where not needed / no such input."""
    def fit(t, ref, want):
        return t.to(ref.dtype).reshape(ref.shape) if (want and ref is not None and t is not None) else x.new_empty(0)
    return (fit(gx, x, need[0]), fit(gdw, dww, need[1]), fit(gdwb, dwb, need[2]), fit(gpw, pww, need[3]),
            fit(gpwb, pwb, need[4]))


# ============================================================================================ triton
if TRITON_OK:
    @triton.jit
    def _dw_tile(x_ptr, dww_ptr, dwb_ptr, img, cc, cm, ph, pw, pm, H, W,
                 K: tl.constexpr, HAS_DWB: tl.constexpr, CDT: tl.constexpr, BLOCK_C: tl.constexpr,
                 BLOCK_P: tl.constexpr):
        """Depthwise conv of channels ``cc`` at pixels (ph, pw): a [BLOCK_C, BLOCK_P] tile in CDT."""
        y = tl.zeros([BLOCK_C, BLOCK_P], dtype=CDT)
        HW = H * W
        base = x_ptr + img + cc[:, None].to(tl.int64) * HW
        for t in tl.static_range(K * K):
            hh = ph + (t // K - K // 2)
            ww = pw + (t % K - K // 2)
            ok = pm & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            v = tl.load(base + (hh * W + ww)[None, :], mask=cm[:, None] & ok[None, :], other=0.0).to(CDT)
            wt = tl.load(dww_ptr + cc * (K * K) + t, mask=cm, other=0.0).to(CDT)
            y += v * wt[:, None]
        if HAS_DWB:
            y += tl.load(dwb_ptr + cc, mask=cm, other=0.0).to(CDT)[:, None]
        return y

    @triton.jit
    def _fwd_kernel(x_ptr, dww_ptr, dwb_ptr, pww_ptr, pwb_ptr, res_ptr, g_ptr, out_ptr, C, O, H, W,
                    K: tl.constexpr, HAS_DWB: tl.constexpr, HAS_PWB: tl.constexpr, HAS_RES: tl.constexpr,
                    ACT: tl.constexpr, SLOPE: tl.constexpr, GRAD_MODE: tl.constexpr, DOT: tl.constexpr,
                    CDT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr):
        """out = act(pw @ dw(x) + pwb) + res; GRAD_MODE: out = g * act'(pw @ dw(x) + pwb) instead.
        DOT (chosen by ``_fwd_config``): 0 broadcast-sum (fp64), 1 fp32 ieee dot, 2 16-bit dot with fp32
        accumulation (GPU)."""
        n = tl.program_id(2)
        HW = H * W
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        ph = p // W
        pw = p % W
        oo = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
        om = oo < O
        img = n.to(tl.int64) * C * HW
        acc = tl.zeros([BLOCK_O, BLOCK_P], dtype=CDT)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            cm = cc < C
            y = _dw_tile(x_ptr, dww_ptr, dwb_ptr, img, cc, cm, ph, pw, pm, H, W, K, HAS_DWB, CDT,
                         BLOCK_C, BLOCK_P)
            wt = tl.load(pww_ptr + oo[:, None] * C + cc[None, :], mask=om[:, None] & cm[None, :], other=0.0)
            if DOT == 2:
                acc += tl.dot(wt, y.to(wt.dtype))
            elif DOT == 1:
                acc += tl.dot(wt.to(CDT), y, input_precision="ieee")
            else:
                acc += tl.sum(wt.to(CDT)[:, :, None] * y[None, :, :], axis=1)
        if HAS_PWB:
            acc += tl.load(pwb_ptr + oo, mask=om, other=0.0).to(CDT)[:, None]
        offs = n.to(tl.int64) * O * HW + oo[:, None].to(tl.int64) * HW + p[None, :]
        m2 = om[:, None] & pm[None, :]
        if GRAD_MODE:
            g = tl.load(g_ptr + offs, mask=m2, other=0.0).to(CDT)
            if ACT == 1:
                g = tl.where(acc > 0, g, 0.0)
            elif ACT == 2:
                g = tl.where(acc > 0, g, g * SLOPE)
            tl.store(out_ptr + offs, g.to(out_ptr.dtype.element_ty), mask=m2)
        else:
            if ACT == 1:
                acc = tl.maximum(acc, 0.0)
            elif ACT == 2:
                acc = tl.where(acc > 0, acc, acc * SLOPE)
            if HAS_RES:
                acc += tl.load(res_ptr + offs, mask=m2, other=0.0).to(CDT)
            tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=m2)

    @triton.jit
    def _dw_kernel(x_ptr, dww_ptr, dwb_ptr, y_ptr, C, H, W, K: tl.constexpr, HAS_DWB: tl.constexpr,
                   CDT: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """y = depthwise(x) + dwb, written in CDT (the backward's recomputation)."""
        n = tl.program_id(2)
        HW = H * W
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        cc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cc < C
        img = n.to(tl.int64) * C * HW
        y = _dw_tile(x_ptr, dww_ptr, dwb_ptr, img, cc, cm, p // W, p % W, pm, H, W, K, HAS_DWB, CDT,
                     BLOCK_C, BLOCK_P)
        tl.store(y_ptr + img + cc[:, None].to(tl.int64) * HW + p[None, :], y.to(y_ptr.dtype.element_ty),
                 mask=cm[:, None] & pm[None, :])

    @triton.jit
    def _dw_bwd_kernel(gy_ptr, x_ptr, dww_ptr, gx_ptr, part_ptr, C, H, W, NPB,
                       K: tl.constexpr, NEED_X: tl.constexpr, NEED_W: tl.constexpr, CDT: tl.constexpr,
                       BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """gx = transposed depthwise conv of gy; part[n, pblock, c, t] = sum_p gy[c, p] * x[c, p + off_t]."""
        n = tl.program_id(2)
        pb = tl.program_id(0)
        HW = H * W
        p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        ph = p // W
        pw = p % W
        cc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        cm = cc < C
        img = n.to(tl.int64) * C * HW
        chan = img + cc[:, None].to(tl.int64) * HW
        gy = tl.load(gy_ptr + chan + p[None, :], mask=cm[:, None] & pm[None, :], other=0.0).to(CDT)
        gx = tl.zeros([BLOCK_C, BLOCK_P], dtype=CDT)
        for t in tl.static_range(K * K):
            dy = t // K - K // 2
            dx = t % K - K // 2
            if NEED_X:  # gx[p] += gy[p - off] * w[t]
                hh = ph - dy
                ww = pw - dx
                ok = pm & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                g_s = tl.load(gy_ptr + chan + (hh * W + ww)[None, :], mask=cm[:, None] & ok[None, :],
                              other=0.0).to(CDT)
                wt = tl.load(dww_ptr + cc * (K * K) + t, mask=cm, other=0.0).to(CDT)
                gx += g_s * wt[:, None]
            if NEED_W:  # dW[t] += gy[p] * x[p + off]
                hh2 = ph + dy
                ww2 = pw + dx
                ok2 = pm & (hh2 >= 0) & (hh2 < H) & (ww2 >= 0) & (ww2 < W)
                xv = tl.load(x_ptr + chan + (hh2 * W + ww2)[None, :], mask=cm[:, None] & ok2[None, :],
                             other=0.0).to(CDT)
                tl.store(part_ptr + ((n.to(tl.int64) * NPB + pb) * C + cc) * (K * K) + t, tl.sum(gy * xv, axis=1),
                         mask=cm)
        if NEED_X:
            tl.store(gx_ptr + chan + p[None, :], gx.to(gx_ptr.dtype.element_ty), mask=cm[:, None] & pm[None, :])


class FwdConfig(NamedTuple):
    """One launch of ``_fwd_kernel``: block sizes, warps and DOT (0: broadcast multiply + tl.sum in CDT,
    1: fp32 ieee tl.dot, 2: 16-bit tl.dot with fp32 accumulation)."""
    block_c: int
    block_o: int
    block_p: int
    num_warps: int
    dot: int


def _fwd_config(c: int, o: int, hw: int, dtype: torch.dtype, interpret: Optional[bool] = None) -> FwdConfig:
    """The forward kernel's launch configuration for C -> O channels over hw pixels; the only place it is chosen
    (``_triton_fwd`` and the AOT sweep in scripts/aot_triton.py call it). fp32 / 16-bit: tl.dot with every block
    dimension >= DOT_MIN (triton 3.6 rejects K < 16, see _util.DOT_MIN): 16-channel chunks, fewer channels padded
    (masked) to 16. fp64: the broadcast multiply + tl.sum path. (A broadcast-sum path for C or O < 16 in fp32 /
    16-bit compiled with triton 3.6 and passed the interpreter, but its 6 GPU tests failed on the H200 -- run 2,
    docs/gpu_op_tests.md; the padded dot is what the H200 has run: 16-bit few-channel shapes in run 1, fp32 K = 16
    in run 2.) GPU tiles checked for sm_80 / sm_90 by scripts/aot_kernels.py (no spills in 16-bit kernels)."""
    interpret = INTERPRET if interpret is None else interpret
    bp = min(1024, max(16, next_pow2(hw)))
    if dtype == torch.float64:  # a small 3-D tile [BLOCK_O, BLOCK_C, BLOCK_P]
        if interpret:  # the interpreter runs one numpy op per tensor op: few, large programs
            bc, bo = min(next_pow2(c), 16), min(next_pow2(o), 64)
            return FwdConfig(bc, bo, min(bp, max(16, (1 << 16) // (bc * bo))), 4, 0)
        return FwdConfig(4, 16, 64, 8, 0)  # 4 warps spilled (16-bit grad mode, when this path served them)
    if interpret:  # the interpreter computes tl.dot in fp32 whatever the input dtype
        return FwdConfig(max(DOT_MIN, min(next_pow2(c), 32)), max(DOT_MIN, min(next_pow2(o), 128)), bp, 4, 1)
    # tiles (BLOCK_O, BLOCK_P, warps) without 16-bit spills at sm_80 / sm_90 under triton 3.9 and 3.6, at every
    # swept shape (scripts/aot_kernels.py): (16, 64, 8), (32, 64, 4), (64, 32, 4). Spilled: 16 x 64 on 4 warps
    # (C = O = H = W = 1), 32 x 64 on 8, 64 x 64 on 8 (sm_80) and on 4 (triton 3.6).
    bo = max(DOT_MIN, min(next_pow2(o), 64))
    return FwdConfig(DOT_MIN, bo, 32 if bo == 64 else 64, 8 if bo == 16 else 4, 1 if dtype == torch.float32 else 2)


def _dw_config(c: int, hw: int, interpret: Optional[bool] = None) -> Tuple[int, int]:
    """(BLOCK_C, BLOCK_P) of ``_dw_kernel`` / ``_dw_bwd_kernel`` (no tl.dot)."""
    interpret = INTERPRET if interpret is None else interpret
    if interpret:
        return min(next_pow2(c), 32), min(1024, max(16, next_pow2(hw)))
    return 8, 128


def _triton_fwd(x, dww, dwb, pww, pwb, res, act, grad=None):
    n, c, h, w = x.shape
    o, k = pww.shape[0], dww.shape[-1]
    gm = grad is not None
    out = torch.empty((n, o, h, w), device=x.device, dtype=acc_dtype(x.dtype) if gm else x.dtype)
    bc, bo, bp, nw, dot = _fwd_config(c, o, h * w, x.dtype)
    if dot and min(bc, bo, bp) < DOT_MIN:  # cheap guard: the interpreter never checks tl.dot's shape rule
        raise AssertionError(f"dwpw_conv2d: tl.dot with a block dimension < {DOT_MIN}: {(bc, bo, bp)}")
    _fwd_kernel[(cdiv(h * w, bp), cdiv(o, bo), n)](
        x, dww, dwb, pww, pwb, res, grad, out, c, o, h, w, K=k, HAS_DWB=dwb is not None,
        HAS_PWB=pwb is not None, HAS_RES=res is not None, ACT=act, SLOPE=LRELU_SLOPE, GRAD_MODE=gm, DOT=dot,
        CDT=tl_acc(x.dtype), BLOCK_C=bc, BLOCK_O=bo, BLOCK_P=bp, num_warps=nw)
    return out


def _triton_bwd(g, x, dww, dwb, pww, pwb, act, need):
    n, c, h, w = x.shape
    o, k = pww.shape[0], dww.shape[-1]
    cdt = acc_dtype(x.dtype)
    gz = _triton_fwd(x, dww, dwb, pww, pwb, None, act, grad=g)  # (n, o, h, w) in cdt
    bc, bp = _dw_config(c, h * w)
    grid = (cdiv(h * w, bp), cdiv(c, bc), n)
    y = torch.empty((n, c, h, w), device=x.device, dtype=cdt)
    _dw_kernel[grid](x, dww, dwb, y, c, h, w, K=k, HAS_DWB=dwb is not None, CDT=tl_acc(x.dtype),
                     BLOCK_C=bc, BLOCK_P=bp)
    gzf, yf = gz.view(n, o, h * w), y.view(n, c, h * w)
    gpw = torch.einsum("nop,ncp->oc", gzf, yf) if need[3] else None
    gpwb = gzf.sum((0, 2)) if need[4] and pwb is not None else None
    gy = torch.matmul(pww.reshape(o, c).to(cdt).t(), gzf).view(n, c, h, w)
    gdwb = gy.sum((0, 2, 3)) if need[2] and dwb is not None else None
    gx = torch.empty((n, c, h, w), device=x.device, dtype=x.dtype) if need[0] else None
    npb = grid[0]
    part = torch.empty((n, npb, c, k * k), device=x.device, dtype=cdt) if need[1] else None
    if need[0] or need[1]:
        _dw_bwd_kernel[grid](gy, x, dww, gx, part, c, h, w, npb, K=k, NEED_X=bool(need[0]),
                             NEED_W=bool(need[1]), CDT=tl_acc(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    gdw = part.sum((0, 1)) if need[1] else None
    return _pack(x, dww, dwb, pww, pwb, need, gx, gdw, gdwb, gpw, gpwb)


# ============================================================================================ cuda
def _cuda_fwd(x, dww, dwb, pww, pwb, res, act, grad=None):
    n, c, h, w = x.shape
    o, k = pww.shape[0], dww.shape[-1]
    gm = grad is not None
    out = torch.empty((n, o, h, w), device=x.device, dtype=acc_dtype(x.dtype) if gm else x.dtype)
    _cuda.call("dwpw_fwd", x, dww, dwb, pww, pwb, res, grad, out, n, c, o, h, w, k, act, LRELU_SLOPE,
               CUDA_DTYPE[x.dtype])
    return out


def _cuda_bwd(g, x, dww, dwb, pww, pwb, act, need):
    n, c, h, w = x.shape
    o, k = pww.shape[0], dww.shape[-1]
    cdt = acc_dtype(x.dtype)
    gz = _cuda_fwd(x, dww, dwb, pww, pwb, None, act, grad=g)
    y = torch.empty((n, c, h, w), device=x.device, dtype=cdt)
    _cuda.call("dw_fwd", x, dww, dwb, y, n, c, h, w, k, CUDA_DTYPE[x.dtype])
    gzf, yf = gz.view(n, o, h * w), y.view(n, c, h * w)
    gpw = torch.einsum("nop,ncp->oc", gzf, yf) if need[3] else None
    gpwb = gzf.sum((0, 2)) if need[4] and pwb is not None else None
    gy = torch.matmul(pww.reshape(o, c).to(cdt).t(), gzf).view(n, c, h, w)
    gdwb = gy.sum((0, 2, 3)) if need[2] and dwb is not None else None
    gx = torch.empty((n, c, h, w), device=x.device, dtype=x.dtype) if need[0] else None
    splits = max(1, min(64, cdiv(n * h * w, 4096)))  # partial sums per channel (fixed per shape)
    part = torch.empty((c, splits, k * k), device=x.device, dtype=cdt) if need[1] else None
    _cuda.call("dw_bwd", gy, x, dww, gx, part, n, c, h, w, k, splits, CUDA_DTYPE[x.dtype])
    gdw = part.sum(1) if need[1] else None
    return _pack(x, dww, dwb, pww, pwb, need, gx, gdw, gdwb, gpw, gpwb)


# ============================================================================================ custom op
@torch.library.custom_op("vsr_engine::dwpw_conv2d", mutates_args=())
def _dwpw_op(x: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor], pw_weight: torch.Tensor,
             pw_bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], act: int,
             backend: str) -> torch.Tensor:
    args = [None if t is None else t.contiguous() for t in (x, dw_weight, dw_bias, pw_weight, pw_bias, residual)]
    if backend == "triton":
        return _triton_fwd(*args, act)
    if backend in ("cuda", "cupy"):
        return _cuda.routed(backend, _cuda_fwd)(*args, act)
    return _torch_fwd(*args, act)


@_dwpw_op.register_fake
def _(x, dw_weight, dw_bias, pw_weight, pw_bias, residual, act, backend):
    return x.new_empty((x.shape[0], pw_weight.shape[0], x.shape[2], x.shape[3]))


@torch.library.custom_op("vsr_engine::dwpw_conv2d_backward", mutates_args=())
def _dwpw_bwd_op(grad: torch.Tensor, x: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
                 pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor], act: int, need: list[bool],
                 backend: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (x, dw_weight, dw_bias, pw_weight, pw_bias); empty where ``need`` is False.
    (The residual's gradient is the incoming gradient itself.)"""
    args = [None if t is None else t.contiguous() for t in (grad, x, dw_weight, dw_bias, pw_weight, pw_bias)]
    fn = {"triton": _triton_bwd, "cuda": _cuda_bwd,
          "cupy": _cuda.routed("cupy", _cuda_bwd)}.get(backend, _torch_bwd)
    return fn(*args, act, need)


@_dwpw_bwd_op.register_fake
def _(grad, x, dw_weight, dw_bias, pw_weight, pw_bias, act, need, backend):
    refs = (x, dw_weight, dw_bias, pw_weight, pw_bias)
    return tuple(r.new_empty(r.shape) if (want and r is not None) else x.new_empty(0) for r, want in zip(refs, need))


def _setup_context(ctx, inputs, output):
    x, dww, dwb, pww, pwb, res, ctx.act, ctx.backend = inputs
    ctx.save_for_backward(x, dww, dwb, pww, pwb)
    ctx.has = [True, True, dwb is not None, True, pwb is not None, res is not None]


def _backward(ctx, grad):
    x, dww, dwb, pww, pwb = ctx.saved_tensors
    need = [bool(ctx.needs_input_grad[i]) and ctx.has[i] for i in range(6)]
    grads = _dwpw_bwd_op(grad, x, dww, dwb, pww, pwb, ctx.act, need[:5], ctx.backend)
    return tuple(g if want else None for g, want in zip(grads, need)) + ((grad if need[5] else None), None, None)


_dwpw_op.register_autograd(_backward, setup_context=_setup_context)


# ============================================================================================ public
def _check(x, dw_weight, dw_bias, pw_weight, pw_bias, residual):
    if x.dim() != 4:
        raise ValueError(f"dwpw_conv2d expects x (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    if dw_weight.dim() != 4 or dw_weight.shape[0] != c or dw_weight.shape[1] != 1 or \
            dw_weight.shape[2] != dw_weight.shape[3] or dw_weight.shape[2] % 2 == 0:
        raise ValueError(f"dwpw_conv2d: dw_weight must be ({c}, 1, k, k) with k odd, got {tuple(dw_weight.shape)}")
    if pw_weight.shape[1] != c or pw_weight.dim() not in (2, 4) or (pw_weight.dim() == 4 and pw_weight.shape[2:] != (1, 1)):
        raise ValueError(f"dwpw_conv2d: pw_weight must be (O, {c}, 1, 1), got {tuple(pw_weight.shape)}")
    o = pw_weight.shape[0]
    if dw_bias is not None and dw_bias.shape != (c,):
        raise ValueError(f"dwpw_conv2d: dw_bias must be ({c},), got {tuple(dw_bias.shape)}")
    if pw_bias is not None and pw_bias.shape != (o,):
        raise ValueError(f"dwpw_conv2d: pw_bias must be ({o},), got {tuple(pw_bias.shape)}")
    if residual is not None and residual.shape != (n, o, h, w):
        raise ValueError(f"dwpw_conv2d: residual must be {(n, o, h, w)}, got {tuple(residual.shape)}")
    for name, t in (("x", x), ("dw_weight", dw_weight), ("dw_bias", dw_bias), ("pw_weight", pw_weight),
                    ("pw_bias", pw_bias), ("residual", residual)):
        check_float(f"dwpw_conv2d {name}", t)
        if t is not None and (t.device != x.device or t.dtype != x.dtype):
            raise ValueError(f"dwpw_conv2d: {name} is {t.dtype} on {t.device}, x is {x.dtype} on {x.device}")


def dwpw_conv2d(x: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor], pw_weight: torch.Tensor,
                pw_bias: Optional[torch.Tensor], activation: Optional[str] = None,
                residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Fused depthwise + pointwise conv (+ activation, + residual) on the active backend."""
    act = _act_code(activation)
    x, dw_weight, dw_bias, pw_weight, pw_bias, residual = autocast_inputs(x, dw_weight, dw_bias, pw_weight, pw_bias,
                                                                          residual)
    _check(x, dw_weight, dw_bias, pw_weight, pw_bias, residual)
    backend = pick("dwpw_conv2d", x)
    if backend == "torch" or x.numel() == 0:
        return dwpw_conv2d_ref(x, dw_weight, dw_bias, pw_weight, pw_bias, activation, residual)
    return _dwpw_op(x, dw_weight, dw_bias, pw_weight, pw_bias, residual, act, backend)
