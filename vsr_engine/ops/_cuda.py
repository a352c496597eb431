"""Run-time loading of the CUDA kernels (``vsr_engine._C``); every failure is soft and leaves a reason.

Order: the prebuilt extension (``setup.py`` builds it when nvcc is present) -> a JIT build of ``csrc/`` with nvcc
(+ ninja when installed) into ``$VSR_ENGINE_HOME/ext/<hash>/`` (default ``~/.cache/vsr_engine``) for this GPU's
architecture, only when a CUDA device exists and ``VSR_ENGINE_JIT`` is not ``0`` -> nothing (the ops use triton
or torch and ``backend_info()`` says why). A loaded extension is probed once (an empty kernel on the device):
an old driver or a missing architecture turns the CUDA backend off instead of failing later.
"""
from __future__ import annotations

import contextvars
import functools
import importlib
import importlib.util
import os
import sys
import threading
import warnings
from typing import Any, Optional

import torch

_lock = threading.Lock()
# tried: the outcome is final; checked: ``why`` describes this machine (a JIT build may still be pending)
_state: dict = {"tried": False, "checked": False, "lib": None, "why": "vsr_engine._C not loaded yet",
                "emulated": False}


def _prebuilt():
    try:
        return importlib.import_module("vsr_engine._C"), "prebuilt vsr_engine._C"
    except ImportError as e:
        return None, f"vsr_engine._C is not built ({e})"


def _home() -> str:
    return os.environ.get("VSR_ENGINE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vsr_engine")


def _jit():
    from . import _build
    if os.environ.get("VSR_ENGINE_JIT", "1") == "0":
        return None, "JIT build disabled (VSR_ENGINE_JIT=0)"
    if not _build.cuda_sources():
        return None, f"no CUDA sources to JIT-build (csrc/ not found at {_build.CSRC}; install from a checkout)"
    if _build.find_nvcc() is None:
        return None, "nvcc not found for a JIT build (set CUDA_HOME or put nvcc on PATH)"
    archs = _build.archs_from_env()
    if archs is None:
        major, minor = torch.cuda.get_device_capability()
        archs = [f"{major}{minor}"]
    import sysconfig
    tag = _build.source_hash(archs)
    out_dir = os.path.join(_home(), "ext", tag)
    out = os.path.join(out_dir, "_C" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not os.path.isfile(out):
        os.makedirs(out_dir, exist_ok=True)
        import fcntl
        with open(os.path.join(out_dir, ".lock"), "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)  # another process may be building the same thing
            if not os.path.isfile(out):
                warnings.warn(f"vsr_engine: building the CUDA kernels for sm_{archs} into {out_dir} (once)",
                              stacklevel=3)
                tmp = out + f".tmp{os.getpid()}"
                try:
                    _build.build(tmp, archs, os.path.join(out_dir, "build"))
                except Exception as e:
                    return None, f"JIT build failed: {str(e).splitlines()[0]}"
                os.replace(tmp, out)
    spec = importlib.util.spec_from_file_location("vsr_engine._C", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["vsr_engine._C"] = mod
    return mod, f"JIT-built vsr_engine._C ({out})"


def lib(jit: bool = True) -> Optional[Any]:
    """The loaded extension, or None (see ``reason()``). Loads on the first call; with ``jit`` (the default) a
    missing prebuilt extension is JIT-built. ``jit=False`` never builds and leaves the JIT for a later call."""
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if _state["tried"]:
            return _state["lib"]
        mod, why, final = None, "", True
        try:
            if not torch.cuda.is_available():
                why = f"no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)"
            else:
                mod, why = _prebuilt()
                if mod is None and not jit:
                    final = False
                    why = f"{why}; it will be JIT-built with nvcc on the first CUDA call (VSR_ENGINE_JIT=0 disables)"
                elif mod is None:
                    mod2, why2 = _jit()
                    mod, why = (mod2, why2) if mod2 is not None else (None, f"{why}; {why2}")
                if mod is not None:
                    err = mod.probe(torch.cuda.current_device())
                    if err:
                        why, mod = f"{why} loaded but cannot launch on this device: {err}", None
        except Exception as e:  # never let the optional backend break an op
            mod, why = None, f"loading the CUDA kernels failed: {type(e).__name__}: {e}"
        _state.update(tried=final, checked=True, lib=mod, why=why)
        return mod


def reason(load: bool = True) -> str:
    """Why the CUDA backend is (not) live. ``load=False`` reports without loading or building anything."""
    if load:
        lib(jit=False)
    if _state["checked"]:
        return _state["why"]
    spec = importlib.util.find_spec("vsr_engine._C")
    return "vsr_engine._C is built (not loaded yet)" if spec else "vsr_engine._C is not built"


def use_emulated(mod: Optional[Any]) -> None:
    """Tests only: route the CUDA backend to a host-emulated build of csrc/ (``_build.build_emulated``) that
    takes CPU tensors; ``None`` restores the normal loader state."""
    if mod is None:
        _state.update(tried=False, checked=False, lib=None, why="vsr_engine._C not loaded yet", emulated=False)
    else:
        _state.update(tried=True, checked=True, lib=mod, why="host-emulated csrc/ kernels (tests)", emulated=True)


_route: contextvars.ContextVar = contextvars.ContextVar("vsr_engine_cuda_route", default="cuda")


def routed(backend: str, fn):
    """``fn`` (an op's ``_cuda_*`` function) with its ``call``s sent to ``backend``: "cuda" (this extension) or
    "cupy" (the same kernels through NVRTC, ``_cupy.call``)."""
    if backend == "cuda":
        return fn

    @functools.wraps(fn)
    def run(*a, **k):
        tok = _route.set(backend)
        try:
            return fn(*a, **k)
        finally:
            _route.reset(tok)
    return run


def call(name: str, *args) -> None:
    """Call launcher ``name``: tensors become device pointers (None -> 0); device and stream are appended."""
    if _route.get() == "cupy":
        from . import _cupy
        return _cupy.call(name, *args)
    m = lib()
    if m is None:
        raise RuntimeError(f"CUDA backend not available: {_state['why']}")
    dev = next(a for a in args if isinstance(a, torch.Tensor)).device
    if _state["emulated"]:
        if dev.type != "cpu":
            raise ValueError(f"{name}: the emulated kernels take CPU tensors, got {dev}")
    elif dev.type != "cuda":
        raise ValueError(f"{name}: the CUDA kernels take CUDA tensors, got {dev}")
    conv = []
    for a in args:
        if isinstance(a, torch.Tensor):
            if a.device != dev:
                raise ValueError(f"{name}: tensors on {a.device} and {dev}")
            conv.append(a.data_ptr())
        elif a is None:
            conv.append(0)
        elif isinstance(a, bool):
            conv.append(int(a))
        else:
            conv.append(a)
    if _state["emulated"]:
        getattr(m, name)(*conv, 0, 0)
        return
    with torch.cuda.device(dev):
        getattr(m, name)(*conv, dev.index if dev.index is not None else torch.cuda.current_device(),
                         torch.cuda.current_stream(dev).cuda_stream)
