"""The ops' host (CPU) kernels: C++ sources ``csrc/<op>_cpu.cpp`` (pybind11, std::thread, no torch header),
compiled on first use for this machine's CPU (``-O3 -march=native``) with ``torch.utils.cpp_extension.load``
(ninja) into ``$VSR_ENGINE_HOME/build/cpu_kernels-<hash>``. Optional, as the CUDA kernels are: nothing is built at
import; when the build cannot run (no compiler, no ninja, no sources) the ops keep their torch path and
``status()`` says why. ``VSR_ENGINE_CPU_KERNELS=0`` turns them off.

Kernels here: ``meta_upscale`` (the op's CPU forward and backward; the profile that chose it: the DSCVSR training
step's Meta-Upscale backward was 53-63 % of the step on the CPU plan, a gather of every output pixel's k x k x C
neighbourhood and a batched mat-vec per offset class, README "Fast step and CPU plan")."""
from __future__ import annotations

import os
import threading
import time

ENV = "VSR_ENGINE_CPU_KERNELS"
SOURCES = ("cpu_bindings.cpp", "meta_upscale_cpu.cpp", "residual_cast_cpu.cpp")
_lock = threading.Lock()
_mod = None
_info: dict = {}


def _csrc() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc")


def enabled() -> bool:
    return os.environ.get(ENV, "1").strip().lower() not in ("0", "no", "off", "false")


def load():
    """The compiled module, or None (``status()['why']`` says why); builds it on the first call."""
    global _mod
    if _mod is not None or _info.get("failed"):
        return _mod
    if not enabled():
        return None
    with _lock:
        if _mod is not None or _info.get("failed"):
            return _mod
        srcs = [os.path.join(_csrc(), s) for s in SOURCES]
        try:
            missing = [s for s in srcs if not os.path.isfile(s)]
            if missing:
                raise FileNotFoundError(f"{missing[0]} not found (installed without sources)")
            from torch.utils import cpp_extension
            from .._host import _jit_build_dir
            bdir = _jit_build_dir(srcs, "cpu_kernels")
            os.makedirs(bdir, exist_ok=True)
            t0 = time.time()
            _mod = cpp_extension.load(name="vsr_cpu_kernels", sources=srcs, build_directory=bdir,
                                      extra_cflags=["-O3", "-march=native", "-fopenmp-simd", "-std=c++17",
                                                    "-pthread"],
                                      extra_ldflags=["-pthread"], verbose=False)
            _info.update(live=True, build_dir=bdir, load_s=round(time.time() - t0, 2))
        except Exception as e:  # no compiler, no ninja, a compile error: the torch path stays
            msg = str(e).strip().splitlines()
            _info.update(live=False, failed=True, why=f"{type(e).__name__}: {' | '.join(msg[-4:])[:600]}")
            _mod = None
    return _mod


def status() -> dict:
    """{'live': bool, 'why' or 'build_dir'/'load_s'}; does not build."""
    if not enabled():
        return {"live": False, "why": f"{ENV}=0"}
    return dict(_info) if _info else {"live": False, "why": "not built yet (built on first use)"}


def threads() -> int:
    import torch
    return max(1, torch.get_num_threads())
