"""Host threads beside the compute: how many threads decode, copy and encode, and no second OpenMP team.

Two rules, both about small machines where the model computes on the CPU:

* **Sizing** (``plan``): the compute (torch's intra-op threads) comes first. On a CPU run the decoder, the
  staging copies and the encoder get the cores the compute leaves free, at least one thread each; libx264's own
  default (about 1.5 x cores) and FFmpeg's automatic decoder threads would otherwise put 3-4 busy threads beside a
  compute team that already uses every core. On a CUDA run the compute is on the device, so the host codecs keep
  their automatic thread counts. Explicit settings (``encoder_threads=``, ``--encoder-threads``) win.
* **One OpenMP team** (``pin_host_thread``): a torch op with a parallel loop, run on any thread, opens an OpenMP
  team of ``torch.get_num_threads()`` threads *for that thread* -- a helper thread that converts or copies a large
  frame gets a second team beside the compute's, and on 2 cores the two spin against each other. Every host
  thread of the engine (decode, stage, download, sink, memory sampler) calls ``pin_host_thread()`` first: its own
  OpenMP thread count becomes 1 (OpenMP keeps it per thread), the compute thread's stays as it was.
"""
from __future__ import annotations

import ctypes
import functools
import os
from typing import NamedTuple, Optional

import torch

__all__ = ["HostThreads", "plan", "pin_host_thread", "cores"]


def cores() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class HostThreads(NamedTuple):
    decoder: int   # FFmpeg decoder threads (0: FFmpeg's automatic count)
    encoder: int   # encoder threads (0: the encoder's default)
    copy: int      # staging-copy threads of the host ring (0: automatic, by frame size)
    why: str

    def describe(self) -> str:
        def n(v):
            return "auto" if v == 0 else str(v)
        return f"host threads: decode {n(self.decoder)}, copy {n(self.copy)}, encode {n(self.encoder)} ({self.why})"


def plan(device: torch.device, compute_threads: Optional[int] = None, ncores: Optional[int] = None) -> HostThreads:
    """Thread counts for the host side of a run on ``device`` (see the module docstring)."""
    if torch.device(device).type != "cpu":
        return HostThreads(0, 0, 0, "compute on the device: the host codecs keep their automatic counts")
    ncores = cores() if ncores is None else int(ncores)
    compute = torch.get_num_threads() if compute_threads is None else int(compute_threads)
    spare = ncores - compute
    if spare <= 0:
        return HostThreads(1, 1, 1, f"compute uses {compute} threads on {ncores} cores")
    return HostThreads(min(spare, 4), spare, 1, f"compute uses {compute} of {ncores} cores")


@functools.lru_cache(maxsize=1)
def _omp_set_num_threads():
    """``omp_set_num_threads`` of the OpenMP runtime torch loaded (libgomp / libiomp5 / libomp), or None."""
    names = ("libgomp", "libiomp5", "libomp")
    try:
        with open("/proc/self/maps") as f:
            paths = {ln.split()[-1] for ln in f if any(n in ln for n in names) and ln.rstrip().endswith((".so", ".so.1", ".so.5"))}
    except OSError:
        paths = set()
    for p in sorted(paths):
        try:
            fn = ctypes.CDLL(p).omp_set_num_threads
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], None
        return fn
    return None


def pin_host_thread() -> bool:
    """Make torch's parallel loops on the calling (non-compute) thread run on that thread alone. Returns whether
    it took effect (False where torch has no OpenMP runtime this can reach; then nothing changes)."""
    if not torch.backends.openmp.is_available():
        return False
    torch.get_num_threads()  # torch's per-thread lazy init first, or it would reset the count on first use
    fn = _omp_set_num_threads()
    if fn is None:
        return False
    fn(1)
    return torch.get_num_threads() == 1
