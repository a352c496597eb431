"""Small helpers shared by the op files (no kernels here)."""
from __future__ import annotations

from typing import Optional

import torch

from ._backend import INTERPRET, TRITON_OK, tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# dtype codes understood by the CUDA launchers (csrc/vsr_kernels.h: VSR_F32, VSR_F16, VSR_BF16, VSR_F64)
CUDA_DTYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation / coordinate dtype: fp64 for fp64 inputs, fp32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_acc(dtype: torch.dtype):
    """The triton compute dtype for a tensor dtype (16-bit values are upcast before any arithmetic)."""
    assert TRITON_OK
    return tl.float64 if dtype == torch.float64 else tl.float32


def check_float(name: str, t: Optional[torch.Tensor]) -> None:
    if t is not None and t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32/float16/bfloat16/float64 tensor, got {t.dtype}")


def interpret_or(interp, gpu):
    """Block-size choice: bigger blocks under the triton interpreter (fewer, vectorised programs)."""
    return interp if INTERPRET else gpu
