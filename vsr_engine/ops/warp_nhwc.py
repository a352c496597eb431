"""warp_nhwc: ``flow_warp`` (bilinear backward warp, pixel-unit flow, align_corners=True) on channels-last features.

    out[n, :, y, x] = bilinear sample of feat[n, :] at (x + flow[n, 0, y, x], y + flow[n, 1, y, x])

the same function as ``ops.flow_warp(feat, flow.permute(0, 2, 3, 1), padding_mode)``, for the fast inference step:
``feat`` and ``out`` are channels-last (N, C, H, W) views (each pixel's C channels contiguous; a pixel stride > C
is a channel slice of a wider buffer, so the warped feature lands straight in the next convolution's input), and
``flow`` is the (N, 2, H, W) tensor SPyNet returns, any strides, any float dtype -- coordinates are computed in fp32.
Each program gathers whole pixels (C contiguous values, coalesced) from the four neighbours; NCHW would gather one
value per channel plane instead. ``padding_mode``: ``"zeros"`` (BasicVSR's propagation) or ``"border"``.

Backends: triton (``_kernel``), torch (``warp_nhwc_ref``: the flow_warp reference). Forward only (inference).
"""
from __future__ import annotations

from typing import Optional

import torch

from ._backend import INTERPRET, TRITON_OK, tl, triton
from ._util import cdiv, interpret_or, next_pow2
from .bias_act import pixel_stride

__all__ = ["warp_nhwc", "warp_nhwc_ref"]


def warp_nhwc_ref(feat: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros") -> torch.Tensor:
    """Reference: ``flow_warp_ref`` (grid_sample, grid built in fp32), result channels-last in feat's dtype."""
    from .flow_warp import flow_warp_ref
    out = flow_warp_ref(feat.contiguous(), flow.permute(0, 2, 3, 1).float(), "bilinear", padding_mode, True)
    return out.contiguous(memory_format=torch.channels_last)


if TRITON_OK:
    @triton.jit
    def _kernel(x_ptr, f_ptr, o_ptr, P, H, W, C, sx, so, sfn, sfc, sfh, sfw,
                BORDER: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        c = tl.arange(0, BLOCK_C)
        pm = p < P
        cm = c < C
        wi = p % W
        hi = (p // W) % H
        n = p // (W * H)
        fo = n * sfn + hi * sfh + wi * sfw
        fx = tl.load(f_ptr + fo, mask=pm, other=0.0).to(tl.float32)
        fy = tl.load(f_ptr + fo + sfc, mask=pm, other=0.0).to(tl.float32)
        # a size-1 axis samples at 0 whatever the flow (what grid_sample makes of align_corners=True there)
        px = tl.where(W > 1, wi.to(tl.float32) + fx, 0.0)
        py = tl.where(H > 1, hi.to(tl.float32) + fy, 0.0)
        if BORDER:
            px = tl.minimum(tl.maximum(px, 0.0), (W - 1).to(tl.float32))
            py = tl.minimum(tl.maximum(py, 0.0), (H - 1).to(tl.float32))
        x0f = tl.floor(px)
        y0f = tl.floor(py)
        ax = px - x0f
        ay = py - y0f
        x0 = x0f.to(tl.int32)
        y0 = y0f.to(tl.int32)
        base = n * H * W
        acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
        for k in tl.static_range(4):
            xx = x0 + (k % 2)
            yy = y0 + (k // 2)
            wx = ax if (k % 2) == 1 else 1.0 - ax
            wy = ay if (k // 2) == 1 else 1.0 - ay
            ok = pm & (xx >= 0) & (xx < W) & (yy >= 0) & (yy < H)
            src = (base + tl.where(ok, yy, 0) * W + tl.where(ok, xx, 0)) * sx
            v = tl.load(x_ptr + src[:, None] + c[None, :], mask=ok[:, None] & cm[None, :], other=0.0)
            acc += v.to(tl.float32) * (wx * wy)[:, None]
        tl.store(o_ptr + p[:, None] * so + c[None, :], acc.to(o_ptr.dtype.element_ty),
                 mask=pm[:, None] & cm[None, :])


def warp_nhwc(feat: torch.Tensor, flow: torch.Tensor, padding_mode: str = "zeros",
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Warp channels-last ``feat`` by ``flow`` (N, 2, H, W) into ``out`` (new channels-last tensor if None)."""
    if feat.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"warp_nhwc expects feat (N,C,H,W) and flow (N,2,H,W), got {tuple(feat.shape)} and "
                         f"{tuple(flow.shape)}")
    n, c, h, w = feat.shape
    if flow.shape[0] != n or flow.shape[2:] != feat.shape[2:]:
        raise ValueError(f"warp_nhwc: flow {tuple(flow.shape)} does not match feat {tuple(feat.shape)}")
    if padding_mode not in ("zeros", "border"):
        raise ValueError(f"warp_nhwc: padding_mode {padding_mode!r} (zeros or border)")
    if out is None:
        out = torch.empty_like(feat, memory_format=torch.channels_last)
    sx = pixel_stride(feat) if TRITON_OK else 0
    so = pixel_stride(out) if TRITON_OK else 0
    P = n * h * w
    # 32-bit offsets: triton 3.6 fails to compile the 64-bit gather when the pixel strides are multiples of 16
    # (seen on the H200, reproduced with triton 3.6's compiler here); larger tensors take the reference
    small = P * max(sx, so, c) < 2 ** 31
    if not (TRITON_OK and (feat.is_cuda or INTERPRET) and small):
        out.copy_(warp_nhwc_ref(feat, flow, padding_mode))
        return out
    if P == 0 or c == 0:
        return out
    bc = next_pow2(c)
    bp = interpret_or(1024, max(1, 2048 // bc))
    _kernel[(cdiv(P, bp),)](feat, flow, out, P, h, w, c, sx, so, *flow.stride(),
                            BORDER=padding_mode == "border", BLOCK_P=bp, BLOCK_C=bc)
    return out
