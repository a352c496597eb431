"""Autocast for the custom ops: under ``torch.autocast`` on the input's device, the op's floating-point inputs are
cast to the autocast dtype first, as aten's convolutions are (so a bf16-autocast training step feeds them one
dtype: activations come out of autocast convs in bf16 while the weights are fp32 masters). Gradients flow back
through the casts to the fp32 weights. Outside autocast nothing changes."""
from __future__ import annotations

import torch


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
    return tuple(t.to(dt) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dt else t
                 for t in tensors)
