"""The CPU execution plan: what this CPU offers decides the dtype and the kernels of the fast step on CPU.

``plan()`` reads the CPU's feature flags once (``/proc/cpuinfo``; torch's own capability string elsewhere):

* AVX-512 BF16 or AMX-BF16 present and oneDNN in this torch build -> **bf16** compute, channels-last, oneDNN's
  fused convolutions (bias + activation or + residual in the convolution), fp32 islands where the fidelity budget
  needs them (each trunk's residual stream and the output layer: ``vsr_engine.fast``);
* otherwise -> **fp32** channels-last with the same fused convolutions (bf16 without hardware support is
  emulated and slower than fp32; fp16 on CPU is slower still).

It is what ``--dtype auto`` (the ``vsr-engine`` default) runs on a CPU; ``--dtype fp32`` runs today's exact fp32
path instead. The Engine's run summary and ``vsr-engine info`` print ``describe()``.
"""
from __future__ import annotations

import functools
from typing import Dict, FrozenSet

import torch

__all__ = ["cpu_flags", "plan", "describe"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> FrozenSet[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is not there)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def _onednn() -> bool:
    from .fast import _mkldnn_ok
    return _mkldnn_ok()


@functools.lru_cache(maxsize=1)
def plan() -> Dict[str, object]:
    """``{"dtype": torch.dtype, "fused": bool, "why": str}`` for this CPU."""
    flags = cpu_flags()
    have = [f for f in BF16_FLAGS if f in flags]
    fused = _onednn()
    try:
        cap = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - old torch
        cap = "?"
    if have and fused:
        return {"dtype": torch.bfloat16, "fused": True,
                "why": f"{'+'.join(have)} ({cap}): bf16 with fp32 islands, channels-last, oneDNN fused convs"}
    return {"dtype": torch.float32, "fused": fused,
            "why": f"no bf16 hardware ({cap})" + (": fp32 channels-last, oneDNN fused convs" if fused
                                                  else ": fp32 channels-last (no oneDNN in this torch build)")}


def describe() -> str:
    p = plan()
    return f"cpu plan: {str(p['dtype']).replace('torch.', '')} -- {p['why']}"
