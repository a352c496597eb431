"""bias_act: the epilogue of a convolution run without its bias, on channels-last activations (inference).

    out[p, c] = act(y[p, c] + bias[c] + z[p, c])        p = every pixel (n, h, w), c = channel

``y``, ``z`` and ``out`` are 4-D (N, C, H, W) tensors whose memory is channels-last: each pixel's C channels are
contiguous, pixels follow each other at a fixed *pixel stride* (>= C). A pixel stride larger than C is a channel
slice of a wider buffer (``buf[:, a:a+C]`` of a channels-last ``buf``), so the fast BasicVSR step writes straight
into the concatenation the next convolution reads, with no ``torch.cat``. ``act``: ``"none"``, ``"relu"`` or
``"lrelu"`` (negative slope ``slope``, 0.1 in BasicVSR). ``z`` (a residual) is optional; ``out`` may be ``y`` or
``z`` (in place). Arithmetic in fp32, one rounding to the output dtype.

One pass over memory replaces PyTorch's three (the conv's broadcast bias add -- not vectorised in channels-last --,
the activation, the residual add). Backends: triton (``_kernel``), torch (``bias_act_ref``). Forward only: it
serves the inference step (``vsr_engine.fast``); training uses the modules' own ops.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ._backend import INTERPRET, TRITON_OK, tl, triton
from ._util import cdiv, interpret_or, next_pow2

__all__ = ["bias_act", "bias_act_ref", "pixel_stride"]

ACTS = {"none": 0, "relu": 1, "lrelu": 2}


def pixel_stride(t: torch.Tensor) -> int:
    """The pixel stride of a channels-last (N, C, H, W) view, or raise ValueError if it is not one."""
    n, c, h, w = t.shape
    sn, sc, sh, sw = t.stride()
    ps = sw if w > 1 else (sh // w if h > 1 else (sn // (h * w) if n > 1 else max(c, 1)))
    ok = (sc == 1 or c == 1) and ps >= c and (w == 1 or sw == ps) and (h == 1 or sh == ps * w) \
        and (n == 1 or sn == ps * w * h)
    if not ok:
        raise ValueError(f"expected a channels-last (N, C, H, W) view, got shape {tuple(t.shape)} "
                         f"strides {tuple(t.stride())}")
    return ps


def bias_act_ref(y: torch.Tensor, bias: Optional[torch.Tensor] = None, act: str = "none", slope: float = 0.1,
                 z: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Reference (fp32 arithmetic, result in y's dtype, channels-last)."""
    v = y.float()
    if bias is not None:
        v = v + bias.float().view(1, -1, 1, 1)
    if z is not None:
        v = v + z.float()
    if act == "relu":
        v = F.relu(v)
    elif act == "lrelu":
        v = F.leaky_relu(v, slope)
    elif act != "none":
        raise ValueError(f"bias_act: unknown act {act!r}; choose none, relu or lrelu")
    return v.to(y.dtype).contiguous(memory_format=torch.channels_last)


if TRITON_OK:
    @triton.jit
    def _kernel(y_ptr, b_ptr, z_ptr, o_ptr, P, C, sy, sz, so, slope,
                HAS_B: tl.constexpr, HAS_Z: tl.constexpr, ACT: tl.constexpr,
                BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        p = (tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)).to(tl.int64)
        c = tl.arange(0, BLOCK_C)
        m = (p < P)[:, None] & (c < C)[None, :]
        v = tl.load(y_ptr + p[:, None] * sy + c[None, :], mask=m, other=0.0).to(tl.float32)
        if HAS_B:
            v += tl.load(b_ptr + c, mask=c < C, other=0.0).to(tl.float32)[None, :]
        if HAS_Z:
            v += tl.load(z_ptr + p[:, None] * sz + c[None, :], mask=m, other=0.0).to(tl.float32)
        if ACT == 1:
            v = tl.maximum(v, 0.0)
        elif ACT == 2:
            v = tl.where(v >= 0.0, v, v * slope)
        tl.store(o_ptr + p[:, None] * so + c[None, :], v.to(o_ptr.dtype.element_ty), mask=m)


def _block_p(c: int) -> int:
    """Pixels per program: ~4096 elements per program on a GPU (16 KB of fp32 in flight), many more interpreted."""
    return interpret_or(1024, max(1, 4096 // next_pow2(c)))


def bias_act(y: torch.Tensor, bias: Optional[torch.Tensor] = None, act: str = "none", slope: float = 0.1,
             z: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """act(y + bias + z) into ``out`` (new channels-last tensor if None); see the module docstring."""
    if act not in ACTS:
        raise ValueError(f"bias_act: unknown act {act!r}; choose none, relu or lrelu")
    if y.dim() != 4:
        raise ValueError(f"bias_act expects (N, C, H, W), got {tuple(y.shape)}")
    n, c, h, w = y.shape
    if bias is not None and bias.numel() != c:
        raise ValueError(f"bias_act: bias has {bias.numel()} values for {c} channels")
    if z is not None and z.shape != y.shape:
        raise ValueError(f"bias_act: z {tuple(z.shape)} does not match y {tuple(y.shape)}")
    if out is None:
        out = torch.empty_like(y, memory_format=torch.channels_last)
    elif out.shape != y.shape or out.dtype != y.dtype:
        raise ValueError(f"bias_act: out {tuple(out.shape)} {out.dtype} does not match y {tuple(y.shape)} {y.dtype}")
    use_triton = TRITON_OK and (y.is_cuda or INTERPRET)
    if not use_triton:
        out.copy_(bias_act_ref(y, bias, act, slope, z))
        return out
    sy, so = pixel_stride(y), pixel_stride(out)
    sz = pixel_stride(z) if z is not None else 0
    P = n * h * w
    if P == 0 or c == 0:
        return out
    bp, bc = _block_p(c), next_pow2(c)
    b = bias.to(y.device).contiguous() if bias is not None else y
    _kernel[(cdiv(P, bp),)](y, b, z if z is not None else y, out, P, c, sy, sz, so, float(slope),
                            HAS_B=bias is not None, HAS_Z=z is not None, ACT=ACTS[act], BLOCK_P=bp, BLOCK_C=bc)
    return out
