"""shuffle_nhwc: pixel shuffle x2 + bias + LeakyReLU on channels-last tensors (the BasicVSR upsampler's epilogue).

    out[n, c, 2h+i, 2w+j] = lrelu(y[n, 4c + 2i + j, h, w] + bias[4c + 2i + j])

``y`` is the (N, 4C, H, W) output of the upsampling convolution run without its bias, channels-last; ``out`` is a
new channels-last (N, C, 2H, 2W) tensor. Each program reads whole input pixels (4C contiguous values) and writes
each of the four output pixels' C channels contiguously. ``ops.pixel_shuffle_lrelu`` is the NCHW form.

Backends: triton (``_kernel``), torch (``shuffle_nhwc_ref``). Forward only (inference).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._backend import INTERPRET, TRITON_OK, tl, triton
from ._util import cdiv, interpret_or, next_pow2
from .bias_act import pixel_stride

__all__ = ["shuffle_nhwc", "shuffle_nhwc_ref"]


def shuffle_nhwc_ref(y: torch.Tensor, bias: Optional[torch.Tensor] = None, slope: float = 0.1) -> torch.Tensor:
    v = y.float()
    if bias is not None:
        v = v + bias.float().view(1, -1, 1, 1)
    v = F.leaky_relu(F.pixel_shuffle(v, 2), slope)
    return v.to(y.dtype).contiguous(memory_format=torch.channels_last)


if TRITON_OK:
    @triton.jit
    def _kernel(y_ptr, b_ptr, o_ptr, P, H, W, C, sy, slope, HAS_B: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)  # input pixel
        c = tl.arange(0, BLOCK_C)
        m = (p < P)[:, None] & (c < C)[None, :]
        wi = p % W
        hi = (p // W) % H
        n = p // (W * H)
        for k in tl.static_range(4):
            i = k // 2
            j = k % 2
            v = tl.load(y_ptr + p[:, None] * sy + c[None, :] * 4 + k, mask=m, other=0.0).to(tl.float32)
            if HAS_B:
                v += tl.load(b_ptr + c * 4 + k, mask=c < C, other=0.0).to(tl.float32)[None, :]
            v = tl.where(v >= 0.0, v, v * slope)
            q = (n * (2 * H) + 2 * hi + i) * (2 * W) + 2 * wi + j
            tl.store(o_ptr + q[:, None] * C + c[None, :], v.to(o_ptr.dtype.element_ty), mask=m)


def shuffle_nhwc(y: torch.Tensor, bias: Optional[torch.Tensor] = None, slope: float = 0.1) -> torch.Tensor:
    if y.dim() != 4 or y.shape[1] % 4:
        raise ValueError(f"shuffle_nhwc expects (N, 4C, H, W), got {tuple(y.shape)}")
    n, c4, h, w = y.shape
    c = c4 // 4
    if bias is not None and bias.numel() != c4:
        raise ValueError(f"shuffle_nhwc: bias has {bias.numel()} values for {c4} channels")
    if not (TRITON_OK and (y.is_cuda or INTERPRET)):
        return shuffle_nhwc_ref(y, bias, slope)
    out = torch.empty((n, c, 2 * h, 2 * w), device=y.device, dtype=y.dtype, memory_format=torch.channels_last)
    P = n * h * w
    if P == 0 or c == 0:
        return out
    bc = next_pow2(c)
    bp = interpret_or(1024, max(1, 1024 // bc))
    b = bias.to(y.device).contiguous() if bias is not None else y
    _kernel[(cdiv(P, bp),)](y, b, out, P, h, w, c, pixel_stride(y), float(slope), HAS_B=bias is not None,
                            BLOCK_P=bp, BLOCK_C=bc)
    return out
