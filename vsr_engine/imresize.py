"""MATLAB-compatible bicubic ``imresize`` (the standard way to make BI low-resolution inputs).

MATLAB's algorithm: cubic kernel (a = -0.5), widened by 1/scale when shrinking (antialiasing), symmetric
padding at the borders, weights normalised per output pixel; the dimension with the smaller scale is resized
first (height first when equal). For uint8 images each pass is rounded (half away from zero) and saturated
to uint8, as MATLAB does; float images stay float.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np


def cubic(x: np.ndarray) -> np.ndarray:
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
            + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2)))


def contributions(in_len: int, out_len: int, scale: float, antialias: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """(weights, 0-based indices), each (out_len, taps), for one dimension."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    u = np.arange(1, out_len + 1, dtype=np.float64)
    x = u / scale + 0.5 * (1 - 1 / scale)           # output pixel centre in input coordinates (1-based)
    left = np.floor(x - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]   # 1-based
    dist = x[:, None] - idx
    w = scale * cubic(scale * dist) if shrink else cubic(dist)
    w = w / w.sum(axis=1, keepdims=True)
    # symmetric padding: mirror indices outside [1, in_len]
    aux = np.concatenate([np.arange(1, in_len + 1), np.arange(in_len, 0, -1)])
    idx = aux[np.mod(idx.astype(np.int64) - 1, aux.size)] - 1
    keep = np.any(w != 0, axis=0)                    # drop all-zero tap columns, as MATLAB does
    return w[:, keep], idx[:, keep]


def _resize_dim(img: np.ndarray, dim: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    w, idx = contributions(img.shape[dim], out_len, scale, antialias)
    moved = np.moveaxis(img.astype(np.float64), dim, 0)         # (L, ...)
    gathered = moved[idx]                                      # (out, taps, ...)
    wshape = w.shape + (1,) * (moved.ndim - 1)
    out = (gathered * w.reshape(wshape)).sum(axis=1)
    return np.moveaxis(out, 0, dim)


def _round_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def imresize(img: np.ndarray, scale: Optional[Union[float, Sequence[float]]] = None,
             output_shape: Optional[Tuple[int, int]] = None, antialias: bool = True) -> np.ndarray:
    """Resize an (H, W) or (H, W, C) image like MATLAB ``imresize(img, scale, 'bicubic')``.

    Give ``scale`` (a number or (sy, sx)) or ``output_shape`` (H, W); with only a scale the output is
    ceil(H*s) x ceil(W*s) as in MATLAB.
    """
    img = np.asarray(img)
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize expects an (H, W) or (H, W, C) image, got shape {img.shape}")
    h, w = img.shape[:2]
    if output_shape is not None:
        oh, ow = int(output_shape[0]), int(output_shape[1])
        sy, sx = (oh / h, ow / w) if scale is None else ((scale, scale) if np.isscalar(scale) else tuple(scale))
    elif scale is not None:
        sy, sx = (scale, scale) if np.isscalar(scale) else tuple(scale)
        oh, ow = int(math.ceil(h * sy - 1e-9)), int(math.ceil(w * sx - 1e-9))
    else:
        raise ValueError("imresize needs scale or output_shape")
    if oh < 1 or ow < 1:
        raise ValueError(f"imresize output would be empty ({oh}x{ow})")
    is_u8 = img.dtype == np.uint8
    out = img
    order = [0, 1] if sy <= sx else [1, 0]
    for dim in order:
        out = _resize_dim(out, dim, oh if dim == 0 else ow, sy if dim == 0 else sx, antialias)
        if is_u8:
            out = _round_uint8(out)
    return out if is_u8 else out.astype(img.dtype if np.issubdtype(img.dtype, np.floating) else np.float64)


# ------------------------------------------------------------------------------------------------------------
# torch, on any device: the same resize as separable matrices (float tensors, no per-pass rounding)
_MATRIX_CACHE: dict = {}


def resize_matrix(in_len: int, out_len: int, scale: float, device=None, dtype=None, antialias: bool = True):
    """(out_len, in_len) torch matrix A with ``A @ v`` = MATLAB bicubic resize of v (``contributions``)."""
    import torch
    key = (in_len, out_len, float(scale), bool(antialias), str(device), dtype)
    m = _MATRIX_CACHE.get(key)
    if m is None:
        w, idx = contributions(in_len, out_len, scale, antialias=antialias)
        dense = torch.zeros(out_len, in_len, dtype=torch.float64)
        dense.scatter_add_(1, torch.from_numpy(idx), torch.from_numpy(w))
        m = dense.to(device=device, dtype=dtype if dtype is not None else torch.float32)
        if len(_MATRIX_CACHE) > 64:
            _MATRIX_CACHE.clear()
        _MATRIX_CACHE[key] = m
    return m


def imresize_torch(x, out_h: int, out_w: int, scale: Optional[Union[float, Sequence[float]]] = None,
                   antialias: bool = True):
    """(..., H, W) float tensor -> (..., out_h, out_w): ``imresize(img, scale, output_shape=(out_h, out_w))``
    on the tensor's device (antialiased when shrinking, symmetric borders). ``scale`` defaults to out/in per
    dimension, as MATLAB does when only the output size is given."""
    if not x.is_floating_point():
        raise ValueError(f"imresize_torch expects a float tensor, got {x.dtype}")
    h, w = x.shape[-2:]
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize_torch output would be empty ({out_h}x{out_w})")
    if scale is None:
        sy, sx = out_h / h, out_w / w
    else:
        sy, sx = (scale, scale) if np.isscalar(scale) else tuple(scale)
    out = x
    if (out_h, sy) != (h, 1.0):
        out = resize_matrix(h, out_h, sy, x.device, x.dtype, antialias) @ out
    if (out_w, sx) != (w, 1.0):
        out = out @ resize_matrix(w, out_w, sx, x.device, x.dtype, antialias).t()
    return out

