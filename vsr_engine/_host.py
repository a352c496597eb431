"""Host-side staging for the GPU pipeline: an ordered, bounded ring of (pinned) slot buffers and GIL-free copies.

Two interchangeable backends with one API:

* ``cpp``: the pybind11 extension built from ``csrc/host_ring.cpp``. Waits and copies release the GIL; copies
  of large frames are split over a few threads.
* ``python``: a pure-Python fallback (``threading.Condition`` + numpy copies) with the same semantics.

Which one is used: ``$VSR_ENGINE_HOST_BACKEND`` = ``auto`` (default), ``cpp`` or ``python``. ``auto`` tries, in
order, a prebuilt extension (``vsr_engine._host_ext``, from ``pip install``/``setup.py``), then a JIT build of
``csrc/host_ring.cpp`` with ``torch.utils.cpp_extension.load`` (ninja) into
``$VSR_ENGINE_HOME/build/host_ext-<hash>`` (default home ``~/.cache/vsr_engine``), then the Python fallback.
Nothing is compiled at import; the first call that needs a backend decides. ``status()`` says what is active
and why.

Ring protocol (both backends)::

    slot, seq = ring.acquire_free(timeout)     # producer; blocks while all slots are busy (bounded memory)
    ... fill ring.array(slot) ...
    ring.commit(slot, meta)                    # or ring.discard(slot): its sequence number is skipped
    slot, seq, meta = ring.acquire_ready(timeout)   # consumer; strictly in seq order
    ... read ring.array(slot) ...
    ring.release(slot)
    ring.close()        # end of stream: consumers drain, then RingClosed
    ring.fail(exc)      # end with an error: consumers drain frames committed before, then exc is raised
    ring.cancel()       # abort: every waiter and every later call raises RingCancelled

``timeout=None`` waits forever (interruptible by Ctrl-C on the main thread); on expiry ``TimeoutError``.
"""
from __future__ import annotations

import collections
import hashlib
import importlib
import os
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["RingClosed", "RingCancelled", "HostExtensionError", "HostRing", "backend", "status", "load_cpp",
           "python_backend", "copy2d", "stage_planes", "unstage_planes", "array_rows"]

ABI_VERSION = 1
PREBUILT_NAME = "vsr_engine._host_ext"
JIT_NAME = "vsr_engine_host_ext"
ENV_BACKEND = "VSR_ENGINE_HOST_BACKEND"


class RingClosed(RuntimeError):
    """The ring is closed: no more frames (consumer side) or no more writes (producer side)."""


class RingCancelled(RingClosed):
    """The ring was cancelled (abort): raised in every waiter and every later call."""


class HostExtensionError(RuntimeError):
    """The C++ backend could not be loaded or built."""


def source_path() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc", "host_ring.cpp")


def _home() -> str:
    return os.environ.get("VSR_ENGINE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vsr_engine")


# ---------------------------------------------------------------------------------------------------------------
# Python fallback
# ---------------------------------------------------------------------------------------------------------------
_FREE, _WRITING, _READY, _READING = "free", "writing", "ready", "reading"
_SLICE = 0.05


class _PyRing:
    """Pure-Python twin of the C++ ``Ring`` (same states, ordering, errors)."""

    def __init__(self, num_slots: int):
        num_slots = int(num_slots)
        if num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        self._n = num_slots
        self._cv = threading.Condition(threading.Lock())
        self._state = [_FREE] * num_slots
        self._seq = [0] * num_slots
        self._meta: List[Any] = [None] * num_slots
        self._free = collections.deque(range(num_slots))
        self._pending: Dict[int, int] = {}  # seq -> slot, or -1 when discarded
        self._next_write = 0
        self._next_read = 0
        self._committed = self._consumed = self._discarded = 0
        self._closed = self._cancelled = False
        self._error: Optional[BaseException] = None

    @staticmethod
    def _timeout(t) -> Optional[float]:
        if t is None:
            return None
        t = float(t)
        if t != t:
            raise ValueError("timeout is NaN")
        return max(t, 0.0)

    def _wait(self, pred, timeout: Optional[float]) -> bool:
        if pred():
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        while not pred():
            if deadline is None:
                self._cv.wait(_SLICE)
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, _SLICE))
        return True

    def _check_slot(self, slot: int) -> int:
        slot = int(slot)
        if not 0 <= slot < self._n:
            raise IndexError(f"slot {slot} out of range")
        return slot

    def _head_ready(self) -> bool:
        while self._pending.get(self._next_read, 0) == -1:
            del self._pending[self._next_read]
            self._next_read += 1
        s = self._pending.get(self._next_read)
        return s is not None and self._state[s] == _READY

    # producer
    def acquire_free(self, timeout=None) -> Tuple[int, int]:
        t = self._timeout(timeout)
        with self._cv:
            ok = self._wait(lambda: self._cancelled or self._closed or bool(self._free), t)
            if self._cancelled:
                raise RingCancelled("ring cancelled")
            if self._closed:
                raise RingClosed("ring closed for writing")
            if not ok:
                raise TimeoutError("acquire_free: no free slot within the timeout")
            slot = self._free.popleft()
            seq = self._next_write
            self._next_write += 1
            self._state[slot] = _WRITING
            self._seq[slot] = seq
            self._pending[seq] = slot
            return slot, seq

    def commit(self, slot: int, meta: Any = None) -> None:
        slot = self._check_slot(slot)
        with self._cv:
            if self._cancelled:
                raise RingCancelled("ring cancelled")
            if self._state[slot] != _WRITING:
                raise ValueError(f"commit: slot {slot} is {self._state[slot]}, not writing")
            self._meta[slot] = meta
            self._state[slot] = _READY
            self._committed += 1
            self._cv.notify_all()

    def discard(self, slot: int) -> None:
        slot = self._check_slot(slot)
        with self._cv:
            if self._cancelled:
                return
            if self._state[slot] != _WRITING:
                raise ValueError(f"discard: slot {slot} is {self._state[slot]}, not writing")
            self._pending[self._seq[slot]] = -1
            self._state[slot] = _FREE
            self._free.append(slot)
            self._discarded += 1
            self._cv.notify_all()

    # consumer
    def acquire_ready(self, timeout=None) -> Tuple[int, int, Any]:
        t = self._timeout(timeout)
        with self._cv:
            self._wait(lambda: self._cancelled or self._head_ready() or (self._closed and not self._pending), t)
            if self._cancelled:
                raise RingCancelled("ring cancelled")
            if self._head_ready():
                seq = self._next_read
                slot = self._pending.pop(seq)
                self._next_read += 1
                self._state[slot] = _READING
                self._consumed += 1
                meta, self._meta[slot] = self._meta[slot], None
                return slot, seq, meta
            if self._closed and not self._pending:
                if self._error is not None:
                    raise self._error
                raise RingClosed("ring closed: end of stream")
            raise TimeoutError("acquire_ready: no ready slot within the timeout")

    def release(self, slot: int) -> None:
        slot = self._check_slot(slot)
        with self._cv:
            if self._cancelled:
                return
            if self._state[slot] != _READING:
                raise ValueError(f"release: slot {slot} is {self._state[slot]}, not reading")
            self._state[slot] = _FREE
            self._free.append(slot)
            self._cv.notify_all()

    # shutdown
    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def fail(self, exc: BaseException) -> None:
        if not isinstance(exc, BaseException):
            raise TypeError("fail() needs an exception instance")
        with self._cv:
            if self._error is None and not self._cancelled:
                self._error = exc
            self._closed = True
            self._cv.notify_all()

    def cancel(self) -> None:
        with self._cv:
            if self._cancelled:
                return
            self._cancelled = self._closed = True
            self._state = [_FREE] * self._n
            self._meta = [None] * self._n
            self._pending.clear()
            self._free = collections.deque(range(self._n))
            self._cv.notify_all()

    # introspection
    @property
    def num_slots(self) -> int:
        return self._n

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def failed(self) -> bool:
        return self._error is not None

    def states(self) -> List[str]:
        with self._cv:
            return list(self._state)

    def stats(self) -> Dict[str, Any]:
        with self._cv:
            c = collections.Counter(self._state)
            return {"num_slots": self._n, "free": c[_FREE], "writing": c[_WRITING], "ready": c[_READY],
                    "reading": c[_READING], "committed": self._committed, "consumed": self._consumed,
                    "discarded": self._discarded, "next_write_seq": self._next_write,
                    "next_read_seq": self._next_read, "closed": self._closed, "cancelled": self._cancelled,
                    "failed": self._error is not None}


def _u8(obj, writable: bool, what: str) -> np.ndarray:
    try:
        mv = memoryview(obj)
    except TypeError:
        raise TypeError(f"{what} must support the buffer protocol, C-contiguous"
                        f"{' and writable' if writable else ''} (got {type(obj).__name__})") from None
    if not mv.c_contiguous or (writable and mv.readonly):
        raise TypeError(f"{what} must support the buffer protocol, C-contiguous"
                        f"{' and writable' if writable else ''} (got {type(obj).__name__})")
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return np.frombuffer(mv, dtype=np.uint8)


def _check_extent(what: str, size: int, offset: int, stride: int, row_bytes: int, rows: int) -> None:
    if min(offset, stride, row_bytes, rows) < 0:
        raise ValueError(f"{what}: negative offset, stride, row_bytes or rows")
    if rows == 0 or row_bytes == 0:
        return
    end = offset + (rows - 1) * stride + row_bytes
    if end > size:
        raise ValueError(f"{what}: rows reach byte {end} of a {size}-byte buffer (offset {offset}, stride "
                         f"{stride}, row_bytes {row_bytes}, rows {rows})")


def _rows_view(a: np.ndarray, offset: int, stride: int, row_bytes: int, rows: int) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(a[offset:], shape=(rows, row_bytes), strides=(stride, 1),
                                           writeable=a.flags.writeable)


def _overlap(d: np.ndarray, doff, ds, s: np.ndarray, soff, ss, rb, rows) -> bool:
    if rows == 0 or rb == 0:
        return False
    d0 = d.__array_interface__["data"][0] + doff
    s0 = s.__array_interface__["data"][0] + soff
    d1 = d0 + (rows - 1) * ds + rb
    s1 = s0 + (rows - 1) * ss + rb
    return d0 < s1 and s0 < d1


def _py_copy2d(dst, dst_offset, dst_stride, src, src_offset, src_stride, row_bytes, rows, threads=0):
    d, s = _u8(dst, True, "destination"), _u8(src, False, "source")
    dst_offset, dst_stride, src_offset, src_stride, row_bytes, rows = map(
        int, (dst_offset, dst_stride, src_offset, src_stride, row_bytes, rows))
    _check_extent("dst", d.size, dst_offset, dst_stride, row_bytes, rows)
    _check_extent("src", s.size, src_offset, src_stride, row_bytes, rows)
    if rows > 1 and dst_stride < row_bytes:
        raise ValueError("dst_stride < row_bytes: rows would overlap")
    if rows == 0 or row_bytes == 0:
        return
    if _overlap(d, dst_offset, dst_stride, s, src_offset, src_stride, row_bytes, rows):
        raise ValueError("copy2d: source and destination overlap")
    np.copyto(_rows_view(d, dst_offset, dst_stride, row_bytes, rows),
              _rows_view(s, src_offset, src_stride, row_bytes, rows))


def _py_stage_planes(dst, dst_offset, planes, threads=0) -> int:
    d = _u8(dst, True, "destination")
    off = int(dst_offset)
    if off < 0:
        raise ValueError("dst_offset < 0")
    jobs = []
    for p in planes:
        if len(p) != 5:
            raise ValueError("plane must be (src, src_offset, src_stride, row_bytes, rows)")
        src, so, ss, rb, rows = p[0], int(p[1]), int(p[2]), int(p[3]), int(p[4])
        s = _u8(src, False, "source")
        _check_extent("src plane", s.size, so, ss, rb, rows)
        _check_extent("dst", d.size, off, rb, rb, rows)
        if _overlap(d, off, rb, s, so, ss, rb, rows):
            raise ValueError("stage_planes: source and destination overlap")
        jobs.append((off, s, so, ss, rb, rows))
        off += rb * rows
    for doff, s, so, ss, rb, rows in jobs:
        if rows and rb:
            np.copyto(_rows_view(d, doff, rb, rb, rows), _rows_view(s, so, ss, rb, rows))
    return off


def _py_unstage_planes(src, src_offset, planes, threads=0) -> int:
    s = _u8(src, False, "source")
    off = int(src_offset)
    if off < 0:
        raise ValueError("src_offset < 0")
    jobs = []
    for p in planes:
        if len(p) != 5:
            raise ValueError("plane must be (dst, dst_offset, dst_stride, row_bytes, rows)")
        dst, do, ds, rb, rows = p[0], int(p[1]), int(p[2]), int(p[3]), int(p[4])
        d = _u8(dst, True, "destination")
        _check_extent("dst plane", d.size, do, ds, rb, rows)
        if rows > 1 and ds < rb:
            raise ValueError("dst_stride < row_bytes: rows would overlap")
        _check_extent("src", s.size, off, rb, rb, rows)
        if _overlap(d, do, ds, s, off, rb, rb, rows):
            raise ValueError("unstage_planes: source and destination overlap")
        jobs.append((d, do, ds, off, rb, rows))
        off += rb * rows
    for d, do, ds, soff, rb, rows in jobs:
        if rows and rb:
            np.copyto(_rows_view(d, do, ds, rb, rows), _rows_view(s, soff, rb, rb, rows))
    return off


class _PythonBackend:
    """Module-like namespace with the same names as the C++ extension."""
    __name__ = "vsr_engine._host(python fallback)"
    name = "python"
    ABI_VERSION = ABI_VERSION
    Ring = _PyRing
    copy2d = staticmethod(_py_copy2d)
    stage_planes = staticmethod(_py_stage_planes)
    unstage_planes = staticmethod(_py_unstage_planes)

    @staticmethod
    def hardware_threads() -> int:
        return os.cpu_count() or 1

    @staticmethod
    def register_exceptions(closed, cancelled) -> None:
        pass


_PY = _PythonBackend()


def python_backend():
    return _PY


# ---------------------------------------------------------------------------------------------------------------
# C++ backend: prebuilt, else JIT
# ---------------------------------------------------------------------------------------------------------------
_lock = threading.RLock()
_cpp = None  # the loaded extension module
_cpp_info: Dict[str, Any] = {}
_cpp_error: Optional[str] = None
_active = None
_active_info: Dict[str, Any] = {}


def _prepare(mod, how: str, path: Optional[str]):
    if getattr(mod, "ABI_VERSION", None) != ABI_VERSION:
        raise HostExtensionError(f"{how} extension {path} has ABI_VERSION {getattr(mod, 'ABI_VERSION', None)}, "
                                 f"expected {ABI_VERSION}; rebuild it")
    mod.register_exceptions(RingClosed, RingCancelled)
    return mod


def _jit_build_dir(src, prefix: str = "host_ext") -> str:
    """``$VSR_ENGINE_HOME/build/<prefix>-<hash>``: the hash of the source file(s), torch, Python and platform, so a
    changed source or another torch builds afresh (also used by ``vsr_engine.ops._host_kernels``)."""
    import torch
    h = hashlib.sha256()
    for path in ([src] if isinstance(src, str) else src):
        with open(path, "rb") as f:
            h.update(f.read())
    h.update(f"{torch.__version__}|{sys.version_info[:2]}|{sys.platform}".encode())
    return os.path.join(_home(), "build", f"{prefix}-{h.hexdigest()[:12]}")


def load_cpp(build_dir: Optional[str] = None, *, allow_prebuilt: bool = True, allow_jit: bool = True,
             verbose: bool = False):
    """Load the C++ backend (prebuilt ``vsr_engine._host_ext``, else JIT); raises ``HostExtensionError``."""
    global _cpp, _cpp_info, _cpp_error
    with _lock:
        if _cpp is not None:
            return _cpp
        reasons = []
        if allow_prebuilt:
            try:
                mod = importlib.import_module(PREBUILT_NAME)
                _cpp = _prepare(mod, "prebuilt", getattr(mod, "__file__", None))
                _cpp.name = "cpp"
                _cpp_info = {"how": "prebuilt", "path": getattr(mod, "__file__", None)}
                _cpp_error = None
                return _cpp
            except ImportError as e:
                reasons.append(f"no prebuilt {PREBUILT_NAME} ({e})")
            except HostExtensionError as e:
                reasons.append(str(e))
        if allow_jit:
            src = source_path()
            if not os.path.isfile(src):
                reasons.append(f"JIT impossible: {src} not found (installed without sources)")
            else:
                try:
                    from torch.utils import cpp_extension
                    bdir = build_dir or _jit_build_dir(src)
                    os.makedirs(bdir, exist_ok=True)
                    t0 = time.time()
                    mod = cpp_extension.load(name=JIT_NAME, sources=[src], build_directory=bdir,
                                             extra_cflags=["-O3", "-std=c++17", "-pthread"],
                                             extra_ldflags=["-pthread"], verbose=verbose)
                    _cpp = _prepare(mod, "JIT", getattr(mod, "__file__", None))
                    _cpp.name = "cpp"
                    _cpp_info = {"how": "jit", "path": getattr(mod, "__file__", None), "build_dir": bdir,
                                 "load_s": round(time.time() - t0, 2)}
                    _cpp_error = None
                    return _cpp
                except Exception as e:  # compiler missing, ninja missing, compile error, ...
                    msg = str(e).strip().splitlines()
                    reasons.append(f"JIT build failed: {type(e).__name__}: {' | '.join(msg[-6:])[:2000]}")
        _cpp_error = "; ".join(reasons) or "C++ backend disabled"
        raise HostExtensionError(_cpp_error)


def backend(name: Optional[str] = None):
    """The backend namespace: ``name`` = ``'cpp'``, ``'python'`` or ``None``/``'auto'`` (see module docstring)."""
    global _active, _active_info
    want = (name or os.environ.get(ENV_BACKEND) or "auto").lower()
    if want == "python":
        return _PY
    if want == "cpp":
        return load_cpp()
    if want != "auto":
        raise ValueError(f"unknown host backend {want!r} (auto, cpp, python)")
    with _lock:
        if _active is not None:
            return _active
        try:
            _active = load_cpp()
            _active_info = {"active": "cpp", **_cpp_info, "reason": f"C++ extension loaded ({_cpp_info['how']})"}
        except HostExtensionError as e:
            _active = _PY
            _active_info = {"active": "python", "how": "fallback", "reason": str(e)}
        return _active


def status(load: bool = True) -> Dict[str, Any]:
    """Which host backend is active and why. ``load=False`` reports without loading/building anything."""
    want = (os.environ.get(ENV_BACKEND) or "auto").lower()
    if load:
        try:
            backend()
        except HostExtensionError:
            pass
    out: Dict[str, Any] = {"requested": want}
    if want == "python":
        out.update(active="python", how="forced", reason=f"{ENV_BACKEND}=python")
    elif want == "cpp":
        if _cpp is not None:
            out.update(active="cpp", **_cpp_info, reason=f"{ENV_BACKEND}=cpp")
        else:
            out.update(active=None, how=None, reason=_cpp_error or "not loaded yet")
    elif _active is not None:
        out.update(_active_info)
    else:
        out.update(active=None, how=None, reason="not loaded yet (nothing is built until first use)")
    try:
        import torch
        out["pinned"] = bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover
        out["pinned"] = False
    return out


# ---------------------------------------------------------------------------------------------------------------
# Public helpers
# ---------------------------------------------------------------------------------------------------------------
def copy2d(dst, dst_offset, dst_stride, src, src_offset, src_stride, row_bytes, rows, threads: int = 0,
           backend_name: Optional[str] = None) -> None:
    """Copy ``rows`` rows of ``row_bytes`` bytes between C-contiguous buffers with byte strides (GIL released)."""
    backend(backend_name).copy2d(dst, dst_offset, dst_stride, src, src_offset, src_stride, row_bytes, rows, threads)


def stage_planes(dst, dst_offset: int, planes: Sequence[tuple], threads: int = 0,
                 backend_name: Optional[str] = None) -> int:
    """Pack planes ``(src, src_offset, src_stride, row_bytes, rows)`` back to back into ``dst``; returns end."""
    return backend(backend_name).stage_planes(dst, dst_offset, list(planes), threads)


def unstage_planes(src, src_offset: int, planes: Sequence[tuple], threads: int = 0,
                   backend_name: Optional[str] = None) -> int:
    """Unpack back-to-back planes of ``src`` into ``(dst, dst_offset, dst_stride, row_bytes, rows)``."""
    return backend(backend_name).unstage_planes(src, src_offset, list(planes), threads)


def array_rows(a: np.ndarray) -> tuple:
    """``(buffer, offset, stride, row_bytes, rows)`` for a numpy array whose rows are contiguous but may be
    padded (e.g. ``big[:, :w]``): the buffer is a contiguous byte span from the first to the last byte used."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(a).__name__}")
    if a.ndim == 1:
        a = a.reshape(1, -1)
    rows = a.shape[0]
    row_bytes = a.itemsize * int(np.prod(a.shape[1:]))
    inner = a[0] if rows else a
    if rows == 0 or row_bytes == 0:
        return (np.zeros(0, np.uint8), 0, row_bytes, row_bytes, 0)
    if not (inner.flags.c_contiguous and a.strides[0] >= row_bytes):
        a = np.ascontiguousarray(a)
    stride = a.strides[0]
    if a.flags.c_contiguous:
        return (a.reshape(-1).view(np.uint8), 0, stride, row_bytes, rows)
    span = (rows - 1) * stride + row_bytes
    base = np.lib.stride_tricks.as_strided(a.reshape(rows, -1).view(np.uint8)[0], shape=(span,), strides=(1,),
                                           writeable=a.flags.writeable)
    return (base, 0, stride, row_bytes, rows)


class HostRing:
    """``num_slots`` host buffers of ``slot_bytes`` bytes (one pinned allocation when CUDA is available) plus an
    ordered ring over them. Same methods as the backend ring, plus ``array(slot)`` / ``tensor(slot)`` views."""

    def __init__(self, num_slots: int, slot_bytes: int, *, pin_memory: Optional[bool] = None,
                 backend_name: Optional[str] = None):
        import torch
        self.backend = backend(backend_name)
        self._ring = self.backend.Ring(int(num_slots))
        if pin_memory is None:
            pin_memory = torch.cuda.is_available()
        self.pinned = bool(pin_memory)
        self.slot_bytes = int(slot_bytes)
        self.storage = torch.empty((int(num_slots), max(self.slot_bytes, 1)), dtype=torch.uint8,
                                   pin_memory=self.pinned)
        self._arrays = self.storage.numpy()

    @property
    def num_slots(self) -> int:
        return self._ring.num_slots

    def tensor(self, slot: int):
        """The slot as a 1-D uint8 torch tensor (pinned when ``self.pinned``)."""
        return self.storage[slot]

    def array(self, slot: int) -> np.ndarray:
        """The slot as a 1-D uint8 numpy array sharing memory with ``tensor(slot)``."""
        return self._arrays[slot]

    def acquire_free(self, timeout=None):
        return self._ring.acquire_free(timeout)

    def commit(self, slot: int, meta: Any = None) -> None:
        self._ring.commit(slot, meta)

    def discard(self, slot: int) -> None:
        self._ring.discard(slot)

    def acquire_ready(self, timeout=None):
        return self._ring.acquire_ready(timeout)

    def release(self, slot: int) -> None:
        self._ring.release(slot)

    def close(self) -> None:
        self._ring.close()

    def fail(self, exc: BaseException) -> None:
        self._ring.fail(exc)

    def cancel(self) -> None:
        self._ring.cancel()

    def stats(self) -> Dict[str, Any]:
        return dict(self._ring.stats())

    def states(self) -> List[str]:
        return list(self._ring.states())

    @property
    def closed(self) -> bool:
        return self._ring.closed

    @property
    def cancelled(self) -> bool:
        return self._ring.cancelled

    def stage(self, slot: int, planes: Sequence[tuple], offset: int = 0, threads: int = 0) -> int:
        """Pack ``planes`` into ``slot`` (see ``stage_planes``); returns the number of bytes written."""
        return self.backend.stage_planes(self._arrays[slot], offset, list(planes), threads) - offset

    def unstage(self, slot: int, planes: Sequence[tuple], offset: int = 0, threads: int = 0) -> int:
        return self.backend.unstage_planes(self._arrays[slot], offset, list(planes), threads) - offset
