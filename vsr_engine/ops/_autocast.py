"""Autocast for the custom ops: under ``torch.autocast`` on the input's device, the op's floating-point inputs are
cast to the autocast dtype first, as aten's convolutions are (so a bf16-autocast training step feeds them one
dtype: activations come out of autocast convs in bf16 while the weights are fp32 masters). Gradients flow back
through the casts to the fp32 weights. Outside autocast nothing changes.

Within :func:`weight_cast_cache` (the CPU training plan's step, ``training.common._precision``), each weight -- a
leaf tensor that requires grad -- is cast once for the whole region instead of once per call, as torch's autocast
caches the weight casts of its own ops: a recurrent model calls the same layer once per frame (DSCVSR's
depthwise-separable convolutions: ~240 calls per training step), and every call's cast was a copy in the forward
and a ``ToCopyBackward`` plus an fp32 gradient accumulation in the backward."""
from __future__ import annotations

import contextlib
import threading

import torch

_local = threading.local()


@contextlib.contextmanager
def weight_cast_cache():
    """A region in which :func:`autocast_inputs` reuses its casts of weights (cleared on exit; nests)."""
    outer = getattr(_local, "casts", None)
    if outer is None:
        _local.casts = {}
    try:
        yield
    finally:
        if outer is None:
            _local.casts = None


def _cast(t: torch.Tensor, dt: torch.dtype, casts) -> torch.Tensor:
    if casts is None or not (t.is_leaf and t.requires_grad):
        return t.to(dt)
    key = (id(t), dt, torch.is_grad_enabled())
    hit = casts.get(key)
    if hit is not None and hit[0] is t and hit[1] == t._version:
        return hit[2]
    out = t.to(dt)
    casts[key] = (t, t._version, out)          # t held: its id cannot be reused while the entry lives
    return out


def autocast_inputs(*tensors):
    """``tensors`` unchanged outside autocast; else each floating tensor in the autocast dtype (None kept)."""
    ref = next((t for t in tensors if isinstance(t, torch.Tensor)), None)
    if ref is None:
        return tensors
    dev = ref.device.type
    try:
        if not torch.is_autocast_enabled(dev):
            return tensors
        dt = torch.get_autocast_dtype(dev)
    except (TypeError, RuntimeError, AttributeError):  # pragma: no cover - older torch
        return tensors
    casts = getattr(_local, "casts", None)
    return tuple(_cast(t, dt, casts) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dt
                 else t for t in tensors)
