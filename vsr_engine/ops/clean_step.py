"""clean_step: one pass of RealBasicVSR's cleaning loop, x <- x + residue, with mean|residue| over the whole
tensor returned as a 0-d tensor on x's device (no host synchronisation inside the op)."""
from __future__ import annotations

from typing import Tuple

import torch


def clean_step_ref(x: torch.Tensor, residue: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    if x.shape != residue.shape:
        raise ValueError(f"clean_step: shapes differ, {tuple(x.shape)} vs {tuple(residue.shape)}")
    return x + residue, residue.abs().mean(dtype=torch.float32)


def clean_step(x: torch.Tensor, residue: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return clean_step_ref(x, residue)
