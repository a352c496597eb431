"""residual_cast: one pass of an fp32 residual stream fed by 16-bit convolutions (the CPU plan's fp32 island in
``vsr_engine/fast.py``): ``acc += y`` in fp32, then ``x = acc`` rounded to bfloat16 for the next convolution.
With ``lo`` (a compensated block output ``y + lo``: ``lo`` is the bf16-rounded residual of ``y``'s rounding, from a
second convolution pass) it adds ``y + lo``, summed in fp32 first, in the same pass.

torch runs it as two passes over the feature map (``acc.add_(y)``, then ``acc.to(torch.bfloat16)``: the profile of the
CPU plan's BasicVSR step put these at 19 % + 6.5 % of the step, 258 copies of a 64 x 180 x 320 map for 2 frames);
the host kernel (``csrc/residual_cast_cpu.cpp``) does both in one pass with the same bits. Inference only (the fast
step runs under no_grad); CPU tensors; elsewhere, or without the built kernel, the reference runs."""
from __future__ import annotations

from typing import Optional

import torch


def residual_cast_ref(acc: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.bfloat16,
                      lo: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``acc += y`` (``acc += y.float() + lo.float()`` with ``lo``; in place), returns ``acc.to(dtype)`` (same
    memory format)."""
    if lo is None:
        acc.add_(y)
    else:
        acc.add_(y.float() + lo.float())
    return acc.to(dtype)


def _same_layout(acc: torch.Tensor, y: torch.Tensor) -> bool:
    return acc.shape == y.shape and acc.stride() == y.stride() and (
        acc.is_contiguous() or acc.is_contiguous(memory_format=torch.channels_last))


def residual_cast(acc: torch.Tensor, y: torch.Tensor, dtype: torch.dtype = torch.bfloat16,
                  lo: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``acc += y`` (``+ lo``); returns ``acc`` rounded to ``dtype`` -- the host kernel for fp32 ``acc``, bf16 ``y``
    (and ``lo``) and bf16 out on the CPU (same layout, dense), else :func:`residual_cast_ref`."""
    if (acc.device.type == "cpu" and acc.dtype == torch.float32 and y.dtype == torch.bfloat16 and dtype == y.dtype
            and _same_layout(acc, y) and not acc.requires_grad and not y.requires_grad
            and (lo is None or (lo.dtype == y.dtype and lo.device.type == "cpu" and _same_layout(acc, lo)
                                and not lo.requires_grad))):
        from . import _host_kernels
        mod = _host_kernels.load()
        if mod is not None:
            x = torch.empty_like(y)
            mod.residual_cast(acc.data_ptr(), y.data_ptr(), x.data_ptr(), acc.numel(), _host_kernels.threads(),
                              0 if lo is None else lo.data_ptr())
            return x
    return residual_cast_ref(acc, y, dtype, lo)
