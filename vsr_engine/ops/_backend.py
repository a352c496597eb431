"""Backend selection for the hot ops: ``"cuda"`` (csrc/ kernels, ``vsr_engine._C``), ``"cupy"`` (the same csrc/
kernels compiled by NVRTC through CuPy, ``_cupy``), ``"triton"``, ``"torch"``.

Automatic choice, per call, from the tensor's device:
  * CUDA tensors: the op's order in the choice table (``_choice``, ``backend_choice.json``: static analysis until
    GPU rows exist), first backend that is live here; ``torch`` last;
  * CPU tensors: ``triton`` if ``TRITON_INTERPRET=1`` (the interpreter), else ``torch`` (the op's ``<op>_ref``).

Forcing: ``set_backend(name, op=None)`` (process-wide, or for one op), ``with use_backend(name): ...``, or the
environment variable ``VSR_ENGINE_BACKEND`` (read at import; ``op=name,op2=name`` pairs are accepted too).
A forced backend that cannot serve a call raises ``BackendUnavailable`` with the reason instead of silently
falling back. Under ``torch.compile`` the choice is made once, at trace time: set it before compiling.

Importing this module never needs CUDA, triton, cupy or a compiled extension.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from typing import Dict, Iterator, Optional, Tuple

import torch

OPS = ("flow_warp", "dwpw_conv2d", "pixel_shuffle", "meta_upscale", "clean_step", "dyn_upsample", "deform_conv2d")
BACKENDS = ("cuda", "cupy", "triton", "torch")

# ----------------------------------------------------------------------------------------------- triton
try:  # triton is optional; a broken install must not break ``import vsr_engine``
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401
    TRITON_OK, TRITON_WHY = True, f"triton {triton.__version__}"
except Exception as _e:  # pragma: no cover - depends on the machine
    triton = None  # type: ignore[assignment]
    tl = None  # type: ignore[assignment]
    TRITON_OK, TRITON_WHY = False, f"triton not importable ({type(_e).__name__}: {_e})"


def _interpret_flag() -> bool:
    try:
        from triton import knobs  # triton >= 3.3
        return bool(knobs.runtime.interpret)
    except Exception:
        return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


# triton decides interpreted-or-compiled when a kernel is decorated (at import), so this is fixed too.
INTERPRET = TRITON_OK and _interpret_flag()


class BackendUnavailable(RuntimeError):
    """A forced backend cannot run this call (the message says why)."""


# ----------------------------------------------------------------------------------------------- forcing
_forced: Dict[Optional[str], str] = {}  # key None = every op


def _check_name(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)} (or None for automatic)")
    return name


def _check_op(op: Optional[str]) -> Optional[str]:
    if op is not None and op not in OPS:
        raise ValueError(f"unknown op {op!r}; ops are {', '.join(OPS)}")
    return op


def set_backend(name: Optional[str], op: Optional[str] = None) -> None:
    """Force ``name`` for every op (``op=None``) or for one op; ``None`` returns to automatic choice."""
    _check_op(op)
    if name is None:
        _forced.pop(op, None)
        if op is None:
            _forced.clear()
    else:
        _forced[op] = _check_name(name)


def get_backend(op: Optional[str] = None) -> Optional[str]:
    """The forced backend for ``op`` (or globally), or None when the choice is automatic."""
    return _forced.get(op, _forced.get(None)) if op is not None else _forced.get(None)


@contextlib.contextmanager
def use_backend(name: Optional[str], op: Optional[str] = None) -> Iterator[None]:
    """``with use_backend("torch"): ...`` forces a backend for the calls inside (not thread-local)."""
    _check_op(op)
    had, old = op in _forced, _forced.get(op)
    if name is None:
        _forced.pop(op, None)
    else:
        _forced[op] = _check_name(name)
    try:
        yield
    finally:
        if had:
            _forced[op] = old  # type: ignore[assignment]
        else:
            _forced.pop(op, None)


def _read_env() -> None:
    val = os.environ.get("VSR_ENGINE_BACKEND", "").strip()
    if not val or val.lower() in ("auto", "none"):
        return
    try:
        for part in val.split(","):
            if "=" in part:
                op, name = (s.strip() for s in part.split("=", 1))
                set_backend(name, op)
            else:
                set_backend(part.strip())
    except ValueError as e:
        warnings.warn(f"VSR_ENGINE_BACKEND={val!r} ignored: {e}", stacklevel=2)


_read_env()

# ----------------------------------------------------------------------------------------------- availability
# Which backends each op implements (kept explicit for backend_info and the automatic order).
IMPLEMENTS: Dict[str, Tuple[str, ...]] = {op: BACKENDS for op in OPS}


def triton_usable(device_type: str) -> Tuple[bool, str]:
    if not TRITON_OK:
        return False, TRITON_WHY
    if device_type == "cuda":
        if INTERPRET:
            return False, "TRITON_INTERPRET=1: triton kernels run on CPU tensors only"
        return True, TRITON_WHY
    if device_type == "cpu":
        if INTERPRET:
            return True, f"{TRITON_WHY}, interpreter (TRITON_INTERPRET=1)"
        return False, "CPU tensor and TRITON_INTERPRET is not set (set it before Python starts to interpret kernels)"
    return False, f"triton does not run on {device_type!r} tensors"


def cuda_usable(device_type: str, jit: bool = True) -> Tuple[bool, str]:
    """``jit=False``: report without JIT-building the extension (what ``backend_info`` does)."""
    if device_type != "cuda":
        return False, f"the CUDA kernels need CUDA tensors (got {device_type})"
    from . import _cuda
    ok = _cuda.lib(jit=jit) is not None
    return ok, _cuda.reason(load=False)


def cupy_usable(device_type: str) -> Tuple[bool, str]:
    from . import _cupy
    return _cupy.usable(device_type)


_USABLE = {"cuda": cuda_usable, "cupy": cupy_usable, "triton": triton_usable}


def auto_order(op: str, device_type: str, size_bucket: int = -1, train: bool = False) -> Tuple[str, ...]:
    """The order the automatic choice tries for ``op`` (the choice table on CUDA, for the call's size bucket and
    mode -- ``train``: gradients enabled --; triton then torch on CPU). ``torch`` keeps its measured place: a
    kernel measured slower than eager PyTorch comes after it and is never picked automatically."""
    if device_type == "cuda":
        from . import _choice
        got = tuple(b for b in _choice.order(op, size_bucket, train) if b in IMPLEMENTS[op] or b == "torch")
        return got if "torch" in got else got + ("torch",)
    return ("triton", "torch")


def pick(op: str, x: torch.Tensor) -> str:
    """The backend for a call of ``op`` whose main input is ``x`` (its device, and on CUDA its size bucket)."""
    if x.device.type != "cuda":
        return resolve(op, x.device.type)
    from . import _choice
    train = torch.is_grad_enabled()
    return resolve(op, "cuda", _choice.bucket(op, x.numel(), train), train)


@torch.compiler.assume_constant_result
def resolve(op: str, device_type: str, size_bucket: int = -1, train: bool = False) -> str:
    """The backend that runs ``op`` for a tensor on ``device_type`` (``size_bucket``: see ``_choice.bucket``;
    ``train``: gradients enabled, the forward+backward order). Constant under torch.compile."""
    forced = _forced.get(op, _forced.get(None))
    if forced is not None:
        if forced == "torch":
            return forced
        ok, why = _USABLE[forced](device_type)
        if not ok:
            raise BackendUnavailable(f"{op}: backend {forced!r} was forced but cannot run here: {why}")
        return forced
    for b in auto_order(op, device_type, size_bucket, train):
        if b == "torch" or _USABLE[b](device_type)[0]:
            return b
    return "torch"


def backend_info() -> dict:
    """Per op: which backends are live here and why the others are not, plus the automatic choice.

    ``{"flow_warp": {"cuda": {"live": False, "why": "..."}, "triton": {...}, "torch": {...},
    "auto_cuda": "triton", "auto_cpu": "torch", "forced": None}, ..., "_env": {...}}``. Never raises; checking
    CUDA may load (not build) ``vsr_engine._C``.
    """
    from . import _cuda
    has_cuda = torch.cuda.is_available()
    dev = "cuda" if has_cuda else "cpu"
    info: dict = {}
    for op in OPS:
        row: dict = {}
        for b in BACKENDS:
            if b not in IMPLEMENTS[op]:
                row[b] = {"live": False, "why": "not implemented for this op"}
            elif b == "torch":
                row[b] = {"live": True, "why": f"PyTorch {torch.__version__} reference (<op>_ref)"}
            elif b == "triton":
                ok, why = triton_usable(dev)
                row[b] = {"live": ok, "why": why}
            elif b == "cupy":
                ok, why = cupy_usable("cuda")
                row[b] = {"live": ok, "why": why}
            else:
                if not has_cuda:
                    row[b] = {"live": False, "why": "no CUDA device (torch.cuda.is_available() is False; "
                                                    f"torch {torch.__version__}); " + _cuda.reason(load=False)}
                else:
                    ok, why = cuda_usable("cuda", jit=False)
                    row[b] = {"live": ok, "why": why}
        try:
            row["auto_cpu"] = resolve(op, "cpu")
        except BackendUnavailable as e:
            row["auto_cpu"] = f"error: {e}"
        if has_cuda:  # what a CUDA tensor gets now (without triggering a JIT build)
            forced = get_backend(op)
            row["auto_cuda"] = forced or next(b for b in auto_order(op, "cuda") if b == "torch" or row[b]["live"])
        row["order_cuda"] = list(auto_order(op, "cuda"))
        row["forced"] = get_backend(op)
        info[op] = row
    from . import _choice
    info["_env"] = {"triton": TRITON_WHY if TRITON_OK else None, "triton_interpret": INTERPRET,
                    "choice_basis": _choice.basis(),
                    "cuda_device": torch.cuda.get_device_name(0) if has_cuda else None,
                    "cuda_ext": _cuda.reason(load=False)}
    from . import _host_kernels
    info["_env"]["cpu_kernels"] = _host_kernels.status()
    return info


def format_backend_info(info: Optional[dict] = None) -> str:
    """A few lines for ``vsr-engine info``."""
    info = info or backend_info()
    lines, why_not = [], {}
    for op in OPS:
        row = info[op]
        live = [b for b in BACKENDS if row[b]["live"]]
        auto = (f"cuda tensors -> {row['auto_cuda']}, " if "auto_cuda" in row else "") + f"cpu -> {row['auto_cpu']}"
        lines.append(f"  {op:13s} live: {', '.join(live):20s} auto: {auto}; cuda order {'>'.join(row['order_cuda'])}"
                     + (f"  (forced: {row['forced']})" if row["forced"] else ""))
        for b in BACKENDS:
            if not row[b]["live"]:
                why_not.setdefault(f"{b}: {row[b]['why']}", None)
    lines += [f"  not live -- {w}" for w in why_not]
    lines.append(f"  automatic order on CUDA tensors: {info['_env'].get('choice_basis', '?')}")
    ck = info["_env"].get("cpu_kernels") or {}
    lines.append("  host (CPU) kernels, csrc/*_cpu.cpp (meta_upscale off x2/x4): "
                 + ("built" if ck.get("live") else f"not live -- {ck.get('why', '?')}"))
    return "\n".join(lines)
