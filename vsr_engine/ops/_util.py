"""Small helpers shared by the op files (no kernels here)."""
from __future__ import annotations

from typing import Optional

import torch

from ._backend import INTERPRET, TRITON_OK, tl

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# dtype codes understood by the CUDA launchers (csrc/vsr_kernels.h: VSR_F32, VSR_F16, VSR_BF16, VSR_F64)
CUDA_DTYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


# tl.dot's smallest block dimensions in the oldest triton these kernels run with on a GPU (3.6 on the H200):
# M >= 1, N >= 1 and K >= 16 for 16- and 32-bit operands (K >= 32 for 8-bit). Newer wheels (3.9 here) accept K >= 8
# for fp32 and K >= 4 for fp64, and the interpreter checks nothing, so a launcher keeps every tl.dot block
# dimension >= DOT_MIN, and the checks below hold compiles and interpreted runs to the 3.6 rule.
DOT_MIN = 16


def strict_min_dot_size(inner=None):
    """A triton ``min_dot_size`` codegen function (lhs_type, rhs_type) -> (M, N, K) minima: the elementwise maximum
    of ``inner``'s (the backend's own rule) and triton 3.6's. Installed by scripts/aot_triton.py for the sm_90 /
    sm_80 compiles and by tests/ops/conftest.py in the interpreter, so a tl.dot that triton 3.6 rejects fails on a
    CPU-only machine too."""
    def check(lhs_type, rhs_type):
        old = (1, 1, 32 if lhs_type.scalar.primitive_bitwidth == 8 else DOT_MIN)
        own = inner(lhs_type, rhs_type) if inner is not None else (1, 1, 1)
        return tuple(max(a, b) for a, b in zip(own, old))
    return check


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
