"""Casting convolution weights to bf16 so that each kernel keeps its tap sum.

Rounding every weight to the nearest bf16 (8-bit mantissa) moves each 3x3 kernel's sum -- its gain on smooth input --
by up to a few units in the last place. In a recurrent model that gain error is applied again at every propagation
step, and on some content the recurrence amplifies it: on bikes frames 155-186 (BasicVSR, official weights) the
error of the bf16 forward branch grows by ~0.35 dB per step, and weight rounding was the largest of its sources
(probe: nearest-rounded weights alone 54.3 dB after 32 steps; the same weights with the tap sums kept 58.6 dB).

``cast_weight(w, torch.bfloat16)`` starts from nearest rounding and then, per (output, input) channel pair, moves
single taps one bf16 step up or down while that lowers |sum error| + sum of |tap errors| (greedy, at most one tap per
kernel per round, deterministic). Every tap stays within one bf16 step of its fp32 value. Other dtypes, and
1x1 kernels (whose sum is the tap), are a plain cast.
"""
import numpy as np
import torch

__all__ = ["cast_weight"]


def cast_weight(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``w`` (O, I, kh, kw) cast to ``dtype``; for bf16 with kh*kw > 1 each kernel's tap sum is kept as well as bf16
    steps allow (see the module docstring). Returns a new tensor on ``w``'s device."""
    w = w.detach()
    if dtype != torch.bfloat16 or w.dim() != 4 or w.shape[2] * w.shape[3] == 1 or w.dtype == dtype:
        return w.to(dtype)
    o, i, kh, kw = w.shape
    k = kh * kw
    # numpy over (taps, kernels): bf16 values as ordered integer keys (+-1 = one bf16 step up / down)
    wd = w.cpu().double().reshape(o * i, k).t().numpy()
    key = _to_key(w.cpu().to(dtype).reshape(o * i, k).t().contiguous().view(torch.int16).numpy())  # nearest
    act = np.arange(key.shape[1])  # kernels that may still move
    for _ in range(k):
        kk, wa = key[:, act], wd[:, act]
        rd = _value(kk)
        res = (wa - rd).sum(0, keepdims=True)  # > 0: the rounded kernel sums too low
        ckey = kk + np.where(res > 0, 1, -1).astype(np.int32)
        cd = _value(ckey)
        score = np.abs(res) - np.abs(res - (cd - rd)) - (np.abs(wa - cd) - np.abs(wa - rd))  # gain - cost
        best = score.argmax(0)
        sel = np.nonzero(score[best, np.arange(act.size)] > 0)[0]
        if sel.size == 0:
            break
        key[best[sel], act[sel]] = ckey[best[sel], sel]
        act = act[sel]
    bits = np.where(key >= 0, key, (-key) | 0x8000).astype(np.uint16).view(np.int16)
    out = torch.from_numpy(np.ascontiguousarray(bits.T)).view(torch.bfloat16)
    return out.reshape(o, i, kh, kw).to(w.device)


def _to_key(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns (int16) -> int32 keys in the order of the values (sign-magnitude to two's complement)."""
    b = bits.astype(np.int32) & 0xFFFF
    return np.where(b < 0x8000, b, -(b & 0x7FFF)).astype(np.int32)


def _value(key: np.ndarray) -> np.ndarray:
    """int32 keys -> the bf16 values they stand for, in float64."""
    b = np.where(key >= 0, key, (-key) | 0x8000).astype(np.uint32)
    return (b << 16).view(np.float32).astype(np.float64)
