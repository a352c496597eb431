"""flow_warp: bilinear backward warp of a feature map by a per-pixel flow (in pixels).

Contract (BasicSR ``arch_util.flow_warp`` / mmagic ``flow_warp``): out[n, c, y, x] is a bilinear sample of
``x[n, c]`` at pixel coordinates (x + flow[n, y, x, 0], y + flow[n, y, x, 1]), pixel centres on integers.
``padding_mode='zeros'``: neighbours outside the image count as 0 (weights not renormalised);
``'border'``: coordinates clamp to the image. Coordinates are always computed in fp32 (fp64 for fp64 input),
whatever x's dtype -- the official code builds its grid in x's dtype, which in fp16 is off by up to ~0.25 px at
960-pixel widths; this op matches the fp32 result instead.

``align_corners=False`` is honoured too (sampling at X * W / max(W-1, 1) - 0.5, what grid_sample makes of the
official normalisation). A size-1 axis samples at 0 (align_corners=True) like grid_sample. ``interp_mode``
other than 'bilinear' and ``padding_mode='reflection'`` run the torch reference.

Backends: triton (``_fwd_kernel`` / ``_bwd_kernel``), cuda (csrc/flow_warp.cu), torch (``flow_warp_ref``).
Backward gives d/dx (scatter with atomics: not bit-reproducible on GPU, like grid_sample's) and d/dflow.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from . import _cuda
from ._backend import TRITON_OK, pick, tl, triton
from ._util import CUDA_DTYPE, acc_dtype, cdiv, check_float, interpret_or, next_pow2, tl_acc

__all__ = ["flow_warp", "flow_warp_ref"]


# ============================================================================================ reference
def _grid(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """The official normalised grid, built in fp32 (fp64 for fp64 input) instead of x's dtype."""
    _, _, h, w = x.shape
    cdt = acc_dtype(x.dtype)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device, dtype=cdt),
                            torch.arange(w, device=x.device, dtype=cdt), indexing="ij")
    f = flow.to(cdt)
    vx = 2.0 * (gx + f[..., 0]) / max(w - 1, 1) - 1.0
    vy = 2.0 * (gy + f[..., 1]) / max(h - 1, 1) - 1.0
    return torch.stack((vx, vy), dim=3)


def _check(x: torch.Tensor, flow: torch.Tensor) -> None:
    if x.dim() != 4 or flow.dim() != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow_warp expects x (N,C,H,W) and flow (N,H,W,2), got {tuple(x.shape)} and {tuple(flow.shape)}")
    if x.shape[-2:] != flow.shape[1:3] or x.shape[0] != flow.shape[0]:
        raise ValueError(f"flow_warp: flow {tuple(flow.shape)} does not match x {tuple(x.shape)}")
    check_float("flow_warp x", x)
    check_float("flow_warp flow", flow)
    if x.device != flow.device:
        raise ValueError(f"flow_warp: x on {x.device}, flow on {flow.device}")


def flow_warp_ref(x: torch.Tensor, flow: torch.Tensor, interp_mode: str = "bilinear",
                  padding_mode: str = "zeros", align_corners: bool = True) -> torch.Tensor:
    """Reference: the official normalise + ``grid_sample`` path, with the grid built in fp32."""
    _check(x, flow)
    cdt = acc_dtype(x.dtype)
    out = F.grid_sample(x.to(cdt), _grid(x, flow), mode=interp_mode, padding_mode=padding_mode,
                        align_corners=align_corners)
    return out.to(x.dtype)


_PAD = {"zeros": 0, "border": 1, "reflection": 2}


def _torch_bwd(grad, x, flow, padding_mode, align_corners, need_x, need_flow):
    """Explicit backward of ``flow_warp_ref`` (aten's grid_sampler_2d_backward + the normalisation's chain rule)."""
    n, c, h, w = x.shape
    cdt = acc_dtype(x.dtype)
    grid = _grid(x, flow)
    gx, ggrid = torch.ops.aten.grid_sampler_2d_backward(
        grad.to(cdt), x.to(cdt), grid, 0, _PAD[padding_mode], align_corners, [need_x, need_flow])
    gx = gx.to(x.dtype) if need_x else x.new_empty(0)
    if need_flow:
        scale = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)], dtype=cdt, device=x.device)
        gflow = (ggrid * scale).to(flow.dtype)
    else:
        gflow = flow.new_empty(0)
    return gx, gflow


# ============================================================================================ triton
if TRITON_OK:
    @triton.jit
    def _coords(flow_ptr, n, p, pm, H, W, sfn, sfh, sfw, sfc,
                BORDER: tl.constexpr, ALIGN: tl.constexpr, CDT: tl.constexpr):
        """Sampling point, corner indices / validity and bilinear weights for pixels ``p`` of image ``n``."""
        h = p // W
        w = p % W
        fb = flow_ptr + n.to(tl.int64) * sfn + h * sfh + w * sfw
        fx = tl.load(fb, mask=pm, other=0.0).to(CDT)
        fy = tl.load(fb + sfc, mask=pm, other=0.0).to(CDT)
        zero = (p * 0).to(CDT)
        wm1 = zero + (W - 1)  # (W, H may arrive as compile-time 1s: keep the arithmetic on tensors)
        hm1 = zero + (H - 1)
        if ALIGN:  # grid_sample(align_corners=True) of the official normalisation: X = x + dx (0 for size 1)
            sx = wm1 / tl.maximum(wm1, 1.0)
            sy = hm1 / tl.maximum(hm1, 1.0)
            X = (w.to(CDT) + fx) * sx
            Y = (h.to(CDT) + fy) * sy
        else:
            sx = (wm1 + 1.0) / tl.maximum(wm1, 1.0)
            sy = (hm1 + 1.0) / tl.maximum(hm1, 1.0)
            X = (w.to(CDT) + fx) * sx - 0.5
            Y = (h.to(CDT) + fy) * sy - 0.5
        if BORDER:
            # grid_sample's clip: the gradient is zero on and beyond the border
            mx = tl.where((X > 0.0) & (X < wm1), sx, 0.0)
            my = tl.where((Y > 0.0) & (Y < hm1), sy, 0.0)
            X = tl.minimum(tl.maximum(X, 0.0), wm1)
            Y = tl.minimum(tl.maximum(Y, 0.0), hm1)
        else:
            mx = sx
            my = sy
            # far outside, every corner is zero anyway; clamping keeps the int conversion in range
            X = tl.minimum(tl.maximum(X, -2.0), wm1 + 2.0)
            Y = tl.minimum(tl.maximum(Y, -2.0), hm1 + 2.0)
        x0f = tl.floor(X)
        y0f = tl.floor(Y)
        wx1 = X - x0f
        wx0 = (x0f + 1.0) - X
        wy1 = Y - y0f
        wy0 = (y0f + 1.0) - Y
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        x1 = x0 + 1
        y1 = y0 + 1
        vx0 = (x0 >= 0) & (x0 < W)
        vx1 = (x1 >= 0) & (x1 < W)
        vy0 = (y0 >= 0) & (y0 < H) & pm
        vy1 = (y1 >= 0) & (y1 < H) & pm
        # clamped indices keep every address inside the image; validity masks do the zero padding
        cx0 = tl.minimum(tl.maximum(x0, 0), W - 1)
        cx1 = tl.minimum(tl.maximum(x1, 0), W - 1)
        cy0 = tl.minimum(tl.maximum(y0, 0), H - 1)
        cy1 = tl.minimum(tl.maximum(y1, 0), H - 1)
        i00 = cy0 * W + cx0
        i01 = cy0 * W + cx1
        i10 = cy1 * W + cx0
        i11 = cy1 * W + cx1
        return (i00, i01, i10, i11, vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1,
                wx0, wx1, wy0, wy1, mx, my)

    @triton.jit
    def _fwd_kernel(x_ptr, flow_ptr, out_ptr, C, H, W, sfn, sfh, sfw, sfc,
                    BORDER: tl.constexpr, ALIGN: tl.constexpr, CDT: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        n = tl.program_id(1)
        HW = H * W
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        (i00, i01, i10, i11, m00, m01, m10, m11,
         wx0, wx1, wy0, wy1, mx, my) = _coords(flow_ptr, n, p, pm, H, W, sfn, sfh, sfw, sfc, BORDER, ALIGN, CDT)
        w00 = (wx0 * wy0)[None, :]
        w01 = (wx1 * wy0)[None, :]
        w10 = (wx0 * wy1)[None, :]
        w11 = (wx1 * wy1)[None, :]
        img = n.to(tl.int64) * C * HW
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            cm = (cc < C)[:, None]
            base = x_ptr + img + cc[:, None].to(tl.int64) * HW
            v00 = tl.load(base + i00[None, :], mask=cm & m00[None, :], other=0.0).to(CDT)
            v01 = tl.load(base + i01[None, :], mask=cm & m01[None, :], other=0.0).to(CDT)
            v10 = tl.load(base + i10[None, :], mask=cm & m10[None, :], other=0.0).to(CDT)
            v11 = tl.load(base + i11[None, :], mask=cm & m11[None, :], other=0.0).to(CDT)
            val = v00 * w00 + v01 * w01 + v10 * w10 + v11 * w11
            o = out_ptr + img + cc[:, None].to(tl.int64) * HW + p[None, :]
            tl.store(o, val.to(out_ptr.dtype.element_ty), mask=cm & pm[None, :])

    @triton.jit
    def _bwd_kernel(x_ptr, flow_ptr, g_ptr, gx_ptr, gflow_ptr, C, H, W, sfn, sfh, sfw, sfc,
                    BORDER: tl.constexpr, ALIGN: tl.constexpr, CDT: tl.constexpr,
                    NEED_X: tl.constexpr, NEED_FLOW: tl.constexpr,
                    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        n = tl.program_id(1)
        HW = H * W
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = p < HW
        (i00, i01, i10, i11, m00, m01, m10, m11,
         wx0, wx1, wy0, wy1, mx, my) = _coords(flow_ptr, n, p, pm, H, W, sfn, sfh, sfw, sfc, BORDER, ALIGN, CDT)
        img = n.to(tl.int64) * C * HW
        gfx = tl.zeros([BLOCK_P], dtype=CDT)
        gfy = tl.zeros([BLOCK_P], dtype=CDT)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            cm = (cc < C)[:, None]
            coff = img + cc[:, None].to(tl.int64) * HW
            g = tl.load(g_ptr + coff + p[None, :], mask=cm & pm[None, :], other=0.0).to(CDT)
            if NEED_X:  # scatter g * weight to the four corners
                gb = gx_ptr + coff
                tl.atomic_add(gb + i00[None, :], g * (wx0 * wy0)[None, :], mask=cm & m00[None, :],
                              sem="relaxed")
                tl.atomic_add(gb + i01[None, :], g * (wx1 * wy0)[None, :], mask=cm & m01[None, :],
                              sem="relaxed")
                tl.atomic_add(gb + i10[None, :], g * (wx0 * wy1)[None, :], mask=cm & m10[None, :],
                              sem="relaxed")
                tl.atomic_add(gb + i11[None, :], g * (wx1 * wy1)[None, :], mask=cm & m11[None, :],
                              sem="relaxed")
            if NEED_FLOW:
                xb = x_ptr + coff
                v00 = tl.load(xb + i00[None, :], mask=cm & m00[None, :], other=0.0).to(CDT)
                v01 = tl.load(xb + i01[None, :], mask=cm & m01[None, :], other=0.0).to(CDT)
                v10 = tl.load(xb + i10[None, :], mask=cm & m10[None, :], other=0.0).to(CDT)
                v11 = tl.load(xb + i11[None, :], mask=cm & m11[None, :], other=0.0).to(CDT)
                dx = (v01 - v00) * wy0[None, :] + (v11 - v10) * wy1[None, :]
                dy = (v10 - v00) * wx0[None, :] + (v11 - v01) * wx1[None, :]
                gfx += tl.sum(g * dx, axis=0)
                gfy += tl.sum(g * dy, axis=0)
        if NEED_FLOW:
            fo = gflow_ptr + (n.to(tl.int64) * HW + p) * 2
            tl.store(fo, (gfx * mx).to(gflow_ptr.dtype.element_ty), mask=pm)
            tl.store(fo + 1, (gfy * my).to(gflow_ptr.dtype.element_ty), mask=pm)


def _blocks(c: int, hw: int) -> Tuple[int, int]:
    """(channel block, pixel block); the interpreter runs one numpy op per tensor op: few, large programs. On a GPU
    8-channel chunks: with 16, the 16-bit forward spills at sm_80 / sm_90 (68 B with triton 3.6, the H200's) and
    the border-mode backward at sm_90 (scripts/aot_kernels.py)."""
    return interpret_or((min(next_pow2(c), 16), min(1 << 14, max(16, next_pow2(hw)))), (min(next_pow2(c), 8), 128))


def _triton_fwd(x, flow, padding_mode, align_corners):
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    bc, bp = _blocks(c, h * w)
    _fwd_kernel[(cdiv(h * w, bp), n)](
        x, flow, out, c, h, w, *flow.stride(), BORDER=padding_mode == "border", ALIGN=bool(align_corners),
        CDT=tl_acc(x.dtype), BLOCK_C=bc, BLOCK_P=bp)
    return out


def _triton_bwd(grad, x, flow, padding_mode, align_corners, need_x, need_flow):
    n, c, h, w = x.shape
    cdt = acc_dtype(x.dtype)
    gx = torch.zeros(x.shape, dtype=cdt, device=x.device) if need_x else x.new_empty(0)
    gflow = torch.empty((n, h, w, 2), dtype=flow.dtype, device=x.device) if need_flow else flow.new_empty(0)
    bc, bp = _blocks(c, h * w)
    _bwd_kernel[(cdiv(h * w, bp), n)](
        x, flow, grad, gx, gflow, c, h, w, *flow.stride(), BORDER=padding_mode == "border",
        ALIGN=bool(align_corners), CDT=tl_acc(x.dtype), NEED_X=need_x, NEED_FLOW=need_flow,
        BLOCK_C=bc, BLOCK_P=bp, num_warps=8)  # 8 warps: no spills at sm_80/sm_90 (scripts/aot_kernels.py)
    return (gx.to(x.dtype) if need_x else gx), gflow


# ============================================================================================ cuda
def _cuda_fwd(x, flow, padding_mode, align_corners):
    n, c, h, w = x.shape
    out = torch.empty_like(x)
    _cuda.call("flow_warp_fwd", x, flow, out, n, c, h, w, *flow.stride(), padding_mode == "border",
               bool(align_corners), CUDA_DTYPE[x.dtype], CUDA_DTYPE[flow.dtype])
    return out


def _cuda_bwd(grad, x, flow, padding_mode, align_corners, need_x, need_flow):
    n, c, h, w = x.shape
    gx = torch.zeros(x.shape, dtype=acc_dtype(x.dtype), device=x.device) if need_x else None
    gflow = torch.empty((n, h, w, 2), dtype=flow.dtype, device=x.device) if need_flow else None
    _cuda.call("flow_warp_bwd", x, flow, grad, gx, gflow, n, c, h, w, *flow.stride(),
               padding_mode == "border", bool(align_corners), CUDA_DTYPE[x.dtype], CUDA_DTYPE[flow.dtype])
    return (gx.to(x.dtype) if need_x else x.new_empty(0)), (gflow if need_flow else flow.new_empty(0))


# ============================================================================================ custom op
@torch.library.custom_op("vsr_engine::flow_warp", mutates_args=())
def _flow_warp_op(x: torch.Tensor, flow: torch.Tensor, padding_mode: str, align_corners: bool,
                  backend: str) -> torch.Tensor:
    x = x.contiguous()
    if backend == "triton":
        return _triton_fwd(x, flow, padding_mode, align_corners)
    if backend in ("cuda", "cupy"):
        return _cuda.routed(backend, _cuda_fwd)(x, flow, padding_mode, align_corners)
    return flow_warp_ref(x, flow, "bilinear", padding_mode, align_corners)


@_flow_warp_op.register_fake
def _(x, flow, padding_mode, align_corners, backend):
    return x.new_empty(x.shape)


@torch.library.custom_op("vsr_engine::flow_warp_backward", mutates_args=())
def _flow_warp_bwd_op(grad: torch.Tensor, x: torch.Tensor, flow: torch.Tensor, padding_mode: str,
                      align_corners: bool, need_x: bool, need_flow: bool,
                      backend: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """(d/dx, d/dflow); a gradient not asked for comes back as an empty tensor."""
    grad, x = grad.contiguous(), x.contiguous()
    fn = {"triton": _triton_bwd, "cuda": _cuda_bwd,
          "cupy": _cuda.routed("cupy", _cuda_bwd)}.get(backend, _torch_bwd)
    return fn(grad, x, flow, padding_mode, align_corners, need_x, need_flow)


@_flow_warp_bwd_op.register_fake
def _(grad, x, flow, padding_mode, align_corners, need_x, need_flow, backend):
    return (x.new_empty(x.shape) if need_x else x.new_empty(0),
            flow.new_empty(flow.shape) if need_flow else flow.new_empty(0))


def _setup_context(ctx, inputs, output):
    x, flow, ctx.padding_mode, ctx.align_corners, ctx.backend = inputs
    ctx.save_for_backward(x, flow)


def _backward(ctx, grad):
    x, flow = ctx.saved_tensors
    need_x, need_flow = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    gx, gflow = _flow_warp_bwd_op(grad, x, flow, ctx.padding_mode, ctx.align_corners, need_x, need_flow,
                                  ctx.backend)
    return (gx if need_x else None), (gflow if need_flow else None), None, None, None


_flow_warp_op.register_autograd(_backward, setup_context=_setup_context)


# ============================================================================================ public
def flow_warp(x: torch.Tensor, flow: torch.Tensor, interp_mode: str = "bilinear", padding_mode: str = "zeros",
              align_corners: bool = True, *, interpolation: Optional[str] = None) -> torch.Tensor:
    """Drop-in for BasicSR's ``flow_warp(x, flow, interp_mode, padding_mode, align_corners)`` and mmagic's
    ``flow_warp(x, flow, interpolation, padding_mode, align_corners)``: x (N, C, H, W), any C; flow (N, H, W, 2)
    in pixels (any strides, e.g. ``flow.permute(0, 2, 3, 1)``). Runs on the active backend."""
    if interpolation is not None:
        interp_mode = interpolation
    _check(x, flow)
    if interp_mode != "bilinear" or padding_mode not in ("zeros", "border"):
        return flow_warp_ref(x, flow, interp_mode, padding_mode, align_corners)
    backend = pick("flow_warp", x)
    if backend == "torch":
        return flow_warp_ref(x, flow, interp_mode, padding_mode, align_corners)
    return _flow_warp_op(x, flow, padding_mode, bool(align_corners), backend)
