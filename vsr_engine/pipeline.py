"""StreamPipeline: decoded frames -> host staging ring -> device -> step -> host ring -> sink, overlapped.

::

    source thread    caller thread (driver)            download thread               sink thread
    next(frames)     acquire_ready(in ring)            get(output queue)             acquire_ready(out ring)
    stage planes     H2D on the copy-in stream, event  acquire_free(out ring)        wait its D2H event
    (C++, no GIL)    compute waits it; step(frame)     D2H on the copy-out stream    sink(HostFrame) (encode)
    commit(in ring)  outputs -> output queue, with a   (after the step's event),     release(out slot)
                     "computed" event                  event; commit(out ring)
                     (a reaper thread releases each input slot once its H2D event has completed)

* Recurrent state lives wherever the step keeps it (on the device); the pipeline only moves frames.
* Host buffers: ``in_slots`` / ``out_slots`` slots of one pinned allocation each (plain memory without CUDA),
  sized from the first frame / first output. Together with ``pending_outputs`` (outputs queued on the device
  for the download thread) they bound memory: the source blocks when the GPU side lags, the driver blocks when
  the sink (encoder) lags by more than ``pending_outputs + out_slots`` frames. A windowed step emits a burst of
  outputs per window: ``pending_outputs`` >= the window lets the next window compute while the encoder drains
  the previous one.
* No per-frame host synchronisation on the driver: copies are ``non_blocking`` on their own streams, ordered
  with events; host threads wait on events (``Event.synchronize`` releases the GIL), never on ``.cpu()``.
* Frames move as they were decoded (e.g. YUV 4:2:0 planes, 1.5 B/px); ``DeviceFrame.rgb()`` converts on the
  device (``vsr_engine.colour``), ``OutputFrame.from_rgb(..., fmt='yuv420p')`` converts back before the D2H.
* Without CUDA (or ``device='cpu'``) the same code runs with no streams or events: the CPU path is what the
  tests exercise; the CUDA branches are marked ``if self._cuda``.
* A step may return a generator: its outputs are produced and queued one at a time (a window's burst never sits
  on the device at once). Sources may wrap frames in :class:`SourceFrame` to pass their own frame info and
  colour tags through to the step. ``vsr_engine.engine.Engine`` drives every run through this class.

Errors: an exception in the source ends the stream after the frames decoded before it (they are processed and
sunk, the step is not flushed) and is re-raised by ``run``; an exception in the step or the sink aborts
everything (rings cancelled, threads joined) and is re-raised. Ctrl-C in ``run`` does the same.
"""
from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from . import colour
from . import _host
from ._host import RingCancelled, RingClosed
from .host_threads import pin_host_thread

__all__ = ["FrameLayout", "FrameInfo", "DeviceFrame", "OutputFrame", "HostFrame", "StreamPipeline",
           "PipelineStats", "ChunkedModelStep", "frame_planes", "SourceFrame"]

# format -> (subsampling, bit depth) for planar YUV; PyAV / FFmpeg names
_YUV_FORMATS = {
    "yuv420p": ("420", 8), "yuvj420p": ("420", 8), "yuv422p": ("422", 8), "yuvj422p": ("422", 8),
    "yuv444p": ("444", 8), "yuvj444p": ("444", 8),
    "yuv420p10le": ("420", 10), "yuv422p10le": ("422", 10), "yuv444p10le": ("444", 10),
}
_OTHER_FORMATS = {"rgb24": 8, "gray": 8, "gray10le": 10}
# AVColorSpace / AVColorRange codes (libavutil pixfmt.h)
_AV_MATRIX = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020"}
_AV_RANGE = {1: "limited", 2: "full"}


@dataclass(frozen=True)
class FrameLayout:
    """How a frame is packed in a slot: planes back to back, rows unpadded."""
    format: str
    height: int
    width: int
    planes: Tuple[Tuple[int, int], ...]  # (rows, row_bytes) per plane
    bit_depth: int = 8

    @staticmethod
    def from_format(fmt: str, height: int, width: int) -> "FrameLayout":
        fmt = str(fmt)
        if fmt in _YUV_FORMATS:
            sub, bits = _YUV_FORMATS[fmt]
            bps = 1 if bits <= 8 else 2
            planes = tuple((h, w * bps) for h, w in colour.plane_shapes(height, width, sub))
            return FrameLayout(fmt, height, width, planes, bits)
        if fmt == "rgb24":
            return FrameLayout(fmt, height, width, ((height, width * 3),), 8)
        if fmt in ("gray", "gray10le"):
            bits = _OTHER_FORMATS[fmt]
            return FrameLayout(fmt, height, width, ((height, width * (1 if bits <= 8 else 2)),), bits)
        raise ValueError(f"unsupported frame format {fmt!r}; supported: "
                         f"{sorted(_YUV_FORMATS) + sorted(_OTHER_FORMATS)}")

    @staticmethod
    def raw(nbytes: int) -> "FrameLayout":
        return FrameLayout("raw", 1, int(nbytes), ((1, int(nbytes)),), 8)

    @property
    def nbytes(self) -> int:
        return sum(r * b for r, b in self.planes)

    @property
    def subsampling(self) -> Optional[str]:
        return _YUV_FORMATS[self.format][0] if self.format in _YUV_FORMATS else None

    @property
    def is_yuv(self) -> bool:
        return self.format in _YUV_FORMATS

    def split_numpy(self, buf: np.ndarray) -> List[np.ndarray]:
        """Views of the planes in a 1-D uint8 array: YUV (h, w) uint8/uint16, rgb24 (h, w, 3), raw (n,)."""
        out, off = [], 0
        dt = np.uint8 if self.bit_depth <= 8 else np.dtype("<u2")
        for rows, rb in self.planes:
            p = buf[off:off + rows * rb]
            off += rows * rb
            if self.format == "raw":
                out.append(p)
            elif self.format == "rgb24":
                out.append(p.reshape(rows, self.width, 3))
            else:
                out.append(p.view(dt).reshape(rows, -1))
        return out


@dataclass
class FrameInfo:
    index: int
    layout: FrameLayout
    pts: Optional[int] = None
    time_base: Any = None
    matrix: str = "bt709"
    color_range: str = "limited"
    user: Any = None


@dataclass
class SourceFrame:
    """A decoded frame with what the source knows about it: ``user`` (any object, e.g. the reader's own frame
    info with PTS and duration) reaches the step as ``FrameInfo.user``; ``matrix`` / ``color_range`` (the stream's,
    from its tags or a guess) override what the frame itself says."""
    frame: Any
    user: Any = None
    matrix: Optional[str] = None
    color_range: Optional[str] = None


def _default_matrix(height: int) -> str:
    return "bt601" if height < 720 else "bt709"  # the usual convention for untagged video


def frame_planes(frame: Any, bit_depth_u16: int = 10):
    """Describe one decoded frame for staging: ``(layout, planes, info_kwargs)`` where ``planes`` are
    ``(buffer, offset, stride, row_bytes, rows)`` tuples for ``stage_planes``.

    Accepts an ``av.VideoFrame`` (planes with ``line_size`` padding, copied as they are), a numpy array
    (H, W, 3) uint8 (rgb24) or (H, W) (gray), a torch CPU tensor of those shapes, or a tuple (Y, U, V) of 2-D
    arrays (uint8 = 8-bit, uint16 = ``bit_depth_u16``-bit; subsampling from the shapes); any of those wrapped in a
    :class:`SourceFrame`."""
    if isinstance(frame, SourceFrame):
        layout, planes, kw = frame_planes(frame.frame, bit_depth_u16)
        kw["user"] = frame.user
        if frame.matrix:
            kw["matrix"] = frame.matrix
        if frame.color_range:
            kw["color_range"] = frame.color_range
        return layout, planes, kw
    if hasattr(frame, "planes") and hasattr(frame, "format"):  # av.VideoFrame
        fmt = frame.format.name
        if fmt not in _YUV_FORMATS and fmt not in _OTHER_FORMATS:
            raise ValueError(f"frame format {fmt!r} is not staged as is; reformat it first (e.g. yuv420p)")
        layout = FrameLayout.from_format(fmt, frame.height, frame.width)
        planes = [(p, 0, p.line_size, rb, rows) for p, (rows, rb) in zip(frame.planes, layout.planes)]
        cs = getattr(frame, "colorspace", 2)
        cr = getattr(frame, "color_range", 0)
        kw = {"pts": frame.pts, "time_base": frame.time_base,
              "matrix": _AV_MATRIX.get(int(cs), _default_matrix(frame.height)),
              "color_range": "full" if fmt.startswith("yuvj") else _AV_RANGE.get(int(cr), "limited")}
        return layout, planes, kw
    if isinstance(frame, torch.Tensor):
        frame = frame.detach().cpu().numpy()
    if isinstance(frame, np.ndarray):
        if frame.ndim == 3 and frame.shape[2] == 3 and frame.dtype == np.uint8:
            layout = FrameLayout.from_format("rgb24", frame.shape[0], frame.shape[1])
        elif frame.ndim == 2 and frame.dtype == np.uint8:
            layout = FrameLayout.from_format("gray", frame.shape[0], frame.shape[1])
        else:
            raise ValueError(f"numpy frames must be (H, W, 3) or (H, W) uint8, got {frame.dtype} {frame.shape}")
        return layout, [_host.array_rows(frame)], {"matrix": _default_matrix(frame.shape[0])}
    if isinstance(frame, (tuple, list)) and len(frame) == 3:
        y, u, v = [f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f) for f in frame]
        if y.dtype != u.dtype or y.dtype != v.dtype or y.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"YUV planes must all be uint8 or all uint16, got {y.dtype}, {u.dtype}, {v.dtype}")
        sub = colour.subsampling_of(y.shape, u.shape)
        if u.shape != v.shape:
            raise ValueError(f"U {u.shape} and V {v.shape} differ")
        bits = 8 if y.dtype == np.uint8 else int(bit_depth_u16)
        fmt = f"yuv{sub}p" + ("" if bits == 8 else f"{bits}le")
        layout = FrameLayout.from_format(fmt, y.shape[0], y.shape[1])
        if bits != 8:
            y, u, v = (p.astype("<u2", copy=False) for p in (y, u, v))
        return layout, [_host.array_rows(p) for p in (y, u, v)], {"matrix": _default_matrix(y.shape[0])}
    raise TypeError(f"cannot stage a frame of type {type(frame).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# frames as the step and the sink see them
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class DeviceFrame:
    """One input frame on the compute device: ``data`` is the packed uint8 buffer (owned by the step)."""
    data: torch.Tensor
    info: FrameInfo

    @property
    def layout(self) -> FrameLayout:
        return self.info.layout

    def planes(self) -> Tuple[torch.Tensor, ...]:
        lay = self.layout
        if lay.is_yuv:
            return colour.split_planes(self.data, lay.height, lay.width, lay.subsampling, lay.bit_depth)
        if lay.format == "rgb24":
            return (self.data.view(lay.height, lay.width, 3),)
        if lay.format == "raw":
            return (self.data,)
        p = self.data if lay.bit_depth <= 8 else self.data.view(torch.int16)
        return (p.view(lay.height, lay.width),)

    def rgb(self, dtype: torch.dtype = torch.float32, **colour_kw) -> torch.Tensor:
        """(3, H, W) R'G'B' in [0, 1] on the device (YUV converted with ``vsr_engine.colour``)."""
        lay = self.layout
        if lay.is_yuv:
            kw = {"matrix": self.info.matrix, "color_range": self.info.color_range, **colour_kw}
            y, u, v = self.planes()
            return colour.yuv_to_rgb(y, u, v, bit_depth=lay.bit_depth, dtype=dtype, **kw)
        if lay.format == "rgb24":
            return self.planes()[0].permute(2, 0, 1).to(torch.float32).div_(255.0).to(dtype)
        if lay.format in ("gray", "gray10le"):
            g = self.planes()[0].to(torch.float32) / float((1 << lay.bit_depth) - 1)
            return g.unsqueeze(0).expand(3, -1, -1).to(dtype)
        raise ValueError(f"no RGB view of a {lay.format} frame")


@dataclass
class OutputFrame:
    """What a step returns per output frame: any tensor (its bytes are downloaded as they are)."""
    data: torch.Tensor
    info: Any = None
    layout: Optional[FrameLayout] = None

    @staticmethod
    def from_rgb(rgb: torch.Tensor, info: Any = None, fmt: str = "yuv420p", **colour_kw) -> "OutputFrame":
        """(3, H, W) R'G'B' in [0, 1] on the device -> packed ``fmt`` bytes, converted on the device.
        ``fmt``: ``yuv420p`` (1.5 B/px; default), ``yuv422p``, ``yuv444p``, ``*10le``, or ``rgb24``."""
        h, w = int(rgb.shape[-2]), int(rgb.shape[-1])
        layout = FrameLayout.from_format(fmt, h, w)
        if fmt == "rgb24":
            data = rgb.detach().float().clamp(0, 1).mul(255.0).round_().to(torch.uint8).permute(1, 2, 0)
            return OutputFrame(data.contiguous().view(-1), info, layout)
        if not layout.is_yuv:
            raise ValueError(f"cannot encode RGB as {fmt!r}")
        if isinstance(info, FrameInfo):
            colour_kw = {"matrix": info.matrix, "color_range": info.color_range, **colour_kw}
        packed = colour.rgb_to_packed_yuv(rgb.detach(), subsampling=layout.subsampling, bit_depth=layout.bit_depth,
                                          **colour_kw)
        return OutputFrame(packed, info, layout)


@dataclass
class HostFrame:
    """One output frame in host memory, handed to the sink. ``data`` is a view into a (pinned) ring slot that
    is reused after the sink returns: copy what you keep (``copy_into`` does it without the GIL)."""
    data: np.ndarray
    info: Any
    layout: FrameLayout
    seq: int
    _backend: Any = None

    def planes(self) -> List[np.ndarray]:
        return self.layout.split_numpy(self.data)

    def copy_into(self, frame: Any, threads: int = 0) -> Any:
        """Copy into an ``av.VideoFrame`` of the same format and size (rows padded to its ``line_size``)."""
        lay = self.layout
        if frame.format.name != lay.format or frame.width != lay.width or frame.height != lay.height:
            raise ValueError(f"frame is {frame.format.name} {frame.width}x{frame.height}, output is "
                             f"{lay.format} {lay.width}x{lay.height}")
        planes = [(p, 0, p.line_size, rb, rows) for p, (rows, rb) in zip(frame.planes, lay.planes)]
        (self._backend or _host.backend()).unstage_planes(self.data, 0, planes, threads)
        return frame

    def to_av(self, threads: int = 0):
        import av
        f = av.VideoFrame(self.layout.width, self.layout.height, self.layout.format)
        return self.copy_into(f, threads)


# ---------------------------------------------------------------------------------------------------------------
@dataclass
class PipelineStats:
    frames_in: int = 0
    frames_out: int = 0
    wall_s: float = 0.0
    host_s: Dict[str, float] = field(default_factory=dict)  # per-stage busy / wait seconds on host threads
    gpu_ms: Dict[str, float] = field(default_factory=dict)  # per-stage GPU time (profile=True on CUDA)
    device: str = "cpu"
    host_backend: str = ""
    pinned: bool = False
    in_slot_bytes: int = 0
    out_slot_bytes: int = 0
    threads_leaked: int = 0

    @property
    def fps(self) -> float:
        return self.frames_out / self.wall_s if self.wall_s > 0 else 0.0

    def shares(self) -> Dict[str, float]:
        """Each host stage's busy time as a fraction of the wall time (stages overlap: they need not sum to 1)."""
        keys = ("decode", "stage", "upload", "step", "download", "sink")
        return {k: self.host_s.get(k, 0.0) / self.wall_s for k in keys if self.wall_s > 0}


class _Timer:
    def __init__(self):
        self.acc: Dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str, dt: float) -> None:
        with self._lock:
            self.acc[key] = self.acc.get(key, 0.0) + dt


StepResult = Union[None, torch.Tensor, OutputFrame, Iterable[Union[torch.Tensor, OutputFrame]]]


class StreamPipeline:
    """Run ``step`` over a stream of decoded frames, overlapping decode, copies, compute and the sink.

    ``step(frame: DeviceFrame) -> None | Tensor | OutputFrame | list``: called on the driver thread, under
    the compute stream on CUDA. Tensors without a layout are downloaded as raw bytes. ``flush() -> same`` is
    called once at the end of the stream (for steps that buffer windows). ``sink(frame: HostFrame)`` runs on
    the sink thread, in output order. A step must not write into a tensor it has returned (its download may
    still be pending). ``in_slots``/``out_slots``: host slots (>= 2: double buffering); ``pending_outputs``:
    outputs queued on the device for the download thread (>= the step's window to overlap compute with
    encoding); ``profile=True`` (CUDA) times H2D, compute and D2H with events into ``stats.gpu_ms``.
    ``drain_on_step_error``: when the step raises an ``Exception``, the outputs it produced before are still
    delivered to the sink before the error is re-raised (the Engine commits finished windows that way).
    """

    def __init__(self, step: Callable[[DeviceFrame], StepResult], sink: Callable[[HostFrame], Any], *,
                 flush: Optional[Callable[[], StepResult]] = None, device: Union[str, torch.device, None] = None,
                 in_slots: int = 3, out_slots: int = 3, in_slot_bytes: Optional[int] = None,
                 out_slot_bytes: Optional[int] = None, pending_outputs: int = 64,
                 host_backend: Optional[str] = None, copy_threads: int = 0, profile: bool = False,
                 join_timeout: float = 30.0, drain_on_step_error: bool = False):
        self.step = step
        self.sink = sink
        self.flush = flush if flush is not None else getattr(step, "flush", None)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        if self._cuda and not torch.cuda.is_available():
            raise RuntimeError("device is CUDA but torch.cuda.is_available() is False")
        if in_slots < 2 or out_slots < 2:
            raise ValueError("in_slots and out_slots must be >= 2 (double buffering)")
        if pending_outputs < 1:
            raise ValueError("pending_outputs must be >= 1")
        self.in_slots, self.out_slots = int(in_slots), int(out_slots)
        self.pending_outputs = int(pending_outputs)
        self.in_slot_bytes, self.out_slot_bytes = in_slot_bytes, out_slot_bytes
        self.host_backend = host_backend
        self.copy_threads = int(copy_threads)
        self.profile = profile
        self.join_timeout = join_timeout
        self.drain_on_step_error = drain_on_step_error
        self._reset()

    def _reset(self):
        self._error: Optional[BaseException] = None
        self._error_lock = threading.Lock()
        self._in: Optional[_host.HostRing] = None
        self._out: Optional[_host.HostRing] = None
        self._out_ready = threading.Event()
        self._aborted = threading.Event()
        self._dl_q: "queue.Queue" = queue.Queue(maxsize=self.pending_outputs)
        self._timer = _Timer()
        self._reaper_q: "queue.Queue" = queue.Queue()
        self._gpu_ms: Dict[str, float] = {}
        self._source_error: Optional[BaseException] = None
        self.stats = PipelineStats()

    # -- error handling -------------------------------------------------------------------------------------
    def _abort(self, exc: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = exc
        self._aborted.set()  # the driver and the download thread poll this while they wait on the output queue
        for r in (self._in, self._out):
            if r is not None:
                r.cancel()
        self._out_ready.set()  # a sink thread waiting for the out ring to exist wakes up

    # -- threads --------------------------------------------------------------------------------------------
    def _source_loop(self, frames: Iterator[Any]) -> None:
        pin_host_thread()  # torch ops here must not open a second OpenMP team (host_threads.py)
        ring = self._in
        t = self._timer
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                layout, planes, kw = frame_planes(frame)
                if layout.nbytes > ring.slot_bytes:
                    raise ValueError(f"frame {self.stats.frames_in} needs {layout.nbytes} bytes, slots hold "
                                     f"{ring.slot_bytes} (frame size changed mid-stream?)")
                slot, seq = ring.acquire_free(None)
                t2 = time.perf_counter()
                try:
                    ring.stage(slot, planes, threads=self.copy_threads)
                except BaseException:
                    ring.discard(slot)
                    raise
                ring.commit(slot, FrameInfo(index=seq, layout=layout, **kw))
                self.stats.frames_in += 1
                t3 = time.perf_counter()
                t.add("decode", t1 - t0)
                t.add("wait_in_slot", t2 - t1)
                t.add("stage", t3 - t2)
            ring.close()
        except RingCancelled:
            pass
        except BaseException as e:  # the source failed: end the stream with this error, in order
            self._source_error = e
            ring.fail(e)

    def _sink_loop(self) -> None:
        pin_host_thread()  # torch ops here must not open a second OpenMP team (host_threads.py)
        self._out_ready.wait()
        ring = self._out
        if ring is None:
            return
        t = self._timer
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    slot, seq, meta = ring.acquire_ready(None)
                except RingClosed:
                    return
                info, layout, nbytes, ev = meta
                t1 = time.perf_counter()
                if ev is not None:
                    ev.synchronize()  # releases the GIL
                t2 = time.perf_counter()
                try:
                    self.sink(HostFrame(ring.array(slot)[:nbytes], info, layout, seq, ring.backend))
                finally:
                    ring.release(slot)
                self.stats.frames_out += 1
                t3 = time.perf_counter()
                t.add("wait_output", t1 - t0)
                t.add("wait_d2h", t2 - t1)
                t.add("sink", t3 - t2)
        except RingCancelled:
            pass
        except BaseException as e:
            self._abort(e)

    def _reaper_loop(self) -> None:
        """CUDA only: returns input slots to the ring once their H2D copy is done; collects GPU timings."""
        pin_host_thread()  # torch ops here must not open a second OpenMP team (host_threads.py)
        while True:
            item = self._reaper_q.get()
            if item is None:
                return
            try:
                kind = item[0]
                if kind == "release":
                    _, ev, ring, slot = item
                    ev.synchronize()
                    ring.release(slot)
                else:  # ("time", key, start, end)
                    _, key, e0, e1 = item
                    e1.synchronize()
                    self._gpu_ms[key] = self._gpu_ms.get(key, 0.0) + e0.elapsed_time(e1)
            except BaseException as e:  # pragma: no cover - CUDA errors
                self._abort(e)
                return

    # -- driver pieces --------------------------------------------------------------------------------------
    def _event(self):
        return torch.cuda.Event(enable_timing=self.profile)

    def _upload(self, slot: int, info: FrameInfo) -> torch.Tensor:
        ring = self._in
        n = info.layout.nbytes
        if self._cuda:
            with torch.cuda.stream(self._copy_in):
                e0 = self._event() if self.profile else None
                if e0 is not None:
                    e0.record(self._copy_in)
                d = torch.empty(n, dtype=torch.uint8, device=self.device)
                d.copy_(ring.tensor(slot)[:n], non_blocking=True)
                ev = self._event()
                ev.record(self._copy_in)
            self._compute.wait_event(ev)
            d.record_stream(self._compute)
            self._reaper_q.put(("release", ev, ring, slot))
            if e0 is not None:
                self._reaper_q.put(("time", "h2d", e0, ev))
            return d
        d = ring.tensor(slot)[:n].clone()
        ring.release(slot)
        return d

    @staticmethod
    def _one(r: Any, info: Optional[FrameInfo]) -> OutputFrame:
        if isinstance(r, torch.Tensor):
            return OutputFrame(r, info)
        if not isinstance(r, OutputFrame):
            raise TypeError(f"step returned {type(r).__name__}; expected a tensor or OutputFrame")
        return r

    def _ensure_out_ring(self, nbytes: int) -> _host.HostRing:
        if self._out is None:
            if self._aborted.is_set():
                raise RingCancelled("pipeline aborted")
            size = max(int(self.out_slot_bytes or 0), nbytes)
            self._out = _host.HostRing(self.out_slots, size, pin_memory=self._cuda,
                                       backend_name=self.host_backend)
            if self._aborted.is_set():  # an abort that ran before the ring existed could not cancel it
                self._out.cancel()
            self.stats.out_slot_bytes = size
            self._out_ready.set()
        return self._out

    @staticmethod
    def _as_bytes(t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        if not t.is_contiguous():
            t = t.contiguous()
        flat = t.reshape(-1)
        return flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)

    def _queue_output(self, o: OutputFrame) -> None:
        """Driver side: hand one output to the download thread (device memory stays bounded by the queue)."""
        ready = None
        if self._cuda and o.data.is_cuda:
            with torch.cuda.stream(self._compute):  # any repacking kernel runs after the step's work
                flat = self._as_bytes(o.data)
                ready = self._event()
                ready.record(self._compute)
        else:
            flat = self._as_bytes(o.data)
        n = flat.numel()
        layout = o.layout or FrameLayout.raw(n)
        if layout.nbytes != n:
            raise ValueError(f"output has {n} bytes but its layout {layout.format} {layout.width}x{layout.height} "
                             f"needs {layout.nbytes}")
        self._put_output((flat, o.info, layout, n, ready))

    def _put_output(self, item) -> None:
        t0 = time.perf_counter()
        while True:
            if self._aborted.is_set():
                raise RingCancelled("pipeline aborted")
            try:
                self._dl_q.put(item, timeout=0.05)
                break
            except queue.Full:
                continue
        self._timer.add("wait_output_queue", time.perf_counter() - t0)

    def _download_loop(self) -> None:
        """Download thread: D2H of each queued output into a (pinned) out slot, in order; closes the out ring."""
        pin_host_thread()  # torch ops here must not open a second OpenMP team (host_threads.py)
        t = self._timer
        ctx = torch.cuda.device(self.device) if self._cuda else contextlib.nullcontext()
        try:
            with ctx:
                while True:
                    try:
                        item = self._dl_q.get(timeout=0.05)
                    except queue.Empty:
                        if self._aborted.is_set():
                            return
                        continue
                    if item is None:
                        break
                    if self._aborted.is_set():
                        return
                    flat, info, layout, n, ready = item
                    del item
                    ring = self._ensure_out_ring(n)
                    if n > ring.slot_bytes:
                        raise ValueError(f"output of {n} bytes does not fit the {ring.slot_bytes}-byte output "
                                         "slots (sized from the first output; pass out_slot_bytes)")
                    t0 = time.perf_counter()
                    slot, seq = ring.acquire_free(None)  # blocks while the sink lags (bounded memory)
                    t1 = time.perf_counter()
                    t.add("wait_out_slot", t1 - t0)
                    ev = None
                    if ready is not None:
                        self._copy_out.wait_event(ready)
                        with torch.cuda.stream(self._copy_out):
                            ring.tensor(slot)[:n].copy_(flat, non_blocking=True)
                            ev = self._event()
                            ev.record(self._copy_out)
                        flat.record_stream(self._copy_out)  # the allocator keeps it until the copy is done
                        if self.profile:
                            self._reaper_q.put(("time", "d2h", ready, ev))
                    else:
                        # a plain memcpy, not a torch copy: on the CPU a torch copy of this size starts an OpenMP
                        # team on this thread while the step's team runs the model (oversubscribed cores)
                        np.copyto(ring.array(slot)[:n], flat.numpy())
                    del flat
                    ring.commit(slot, (info, layout, n, ev))
                    t.add("download", time.perf_counter() - t1)
            if self._out is not None:
                self._out.close()  # end of stream for the sink: it drains, then exits
            else:
                self._out_ready.set()
        except RingCancelled:
            pass
        except BaseException as e:
            self._abort(e)

    def _compute_ctx(self):
        return torch.cuda.stream(self._compute) if self._cuda else contextlib.nullcontext()

    def _run_step(self, fn, *args, info: Optional[FrameInfo] = None) -> None:
        """Call the step (or flush) under the compute stream and queue its outputs as they come: a list, or a
        generator that produces them one by one (its work is timed as "step", the waits for room in the output
        queue are not)."""
        t = self._timer
        e0 = None
        if self._cuda and self.profile:
            e0 = self._event()
            e0.record(self._compute)
        t0 = time.perf_counter()
        with self._compute_ctx():
            res = fn(*args)
        t.add("step", time.perf_counter() - t0)
        if res is not None:
            if isinstance(res, (torch.Tensor, OutputFrame)):
                res = [res]
            it = iter(res)
            while True:
                t0 = time.perf_counter()
                with self._compute_ctx():
                    try:
                        r = next(it)
                    except StopIteration:
                        t.add("step", time.perf_counter() - t0)
                        break
                t.add("step", time.perf_counter() - t0)
                self._queue_output(self._one(r, info))
        if e0 is not None:
            e1 = self._event()
            e1.record(self._compute)
            self._reaper_q.put(("time", "compute", e0, e1))

    # -- main -----------------------------------------------------------------------------------------------
    def run(self, frames: Iterable[Any]) -> PipelineStats:
        """Process the whole stream; returns statistics. Raises the first error of any stage."""
        self._reset()
        st = self.stats
        st.device = str(self.device)
        t_start = time.perf_counter()
        it = iter(frames)
        t0 = time.perf_counter()
        try:
            first = next(it)
        except StopIteration:
            return st
        self._timer.add("decode", time.perf_counter() - t0)
        layout, _, _ = frame_planes(first)
        size = max(int(self.in_slot_bytes or 0), layout.nbytes)
        self._in = _host.HostRing(self.in_slots, size, pin_memory=self._cuda, backend_name=self.host_backend)
        st.in_slot_bytes = size
        st.host_backend = self._in.backend.name
        st.pinned = self._in.pinned
        if self.out_slot_bytes:
            self._ensure_out_ring(int(self.out_slot_bytes))
        if self._cuda:
            self._copy_in = torch.cuda.Stream(self.device)
            self._copy_out = torch.cuda.Stream(self.device)
            self._compute = torch.cuda.Stream(self.device)
        threads = [threading.Thread(target=self._source_loop, args=(itertools.chain([first], it),),
                                    name="vsr-source", daemon=True),
                   threading.Thread(target=self._download_loop, name="vsr-download", daemon=True),
                   threading.Thread(target=self._sink_loop, name="vsr-sink", daemon=True)]
        if self._cuda:
            threads.append(threading.Thread(target=self._reaper_loop, name="vsr-reaper", daemon=True))
        for th in threads:
            th.start()
        source_error: Optional[BaseException] = None
        step_error: Optional[BaseException] = None
        try:
            try:
                self._drive()
            except _SourceFailed as sf:
                source_error = sf.error  # frames before it were processed; finish the output side cleanly
            except _StepFailed as sf:
                step_error = sf.error  # (drain_on_step_error) outputs before it go to the sink, then it is raised
                self._in.cancel()      # stops the source; the output side drains
            except RingCancelled:
                if self._error is None:
                    raise
            if self._error is None:
                self._put_output(None)  # end of outputs: the download thread drains, then closes the out ring
        except BaseException as e:  # step error, Ctrl-C, ...: abort everything
            self._abort(e)
        finally:
            if self._aborted.is_set():
                self._out_ready.set()  # (the download thread sets it otherwise, once the out ring exists)
            self._join(threads)
            st.wall_s = time.perf_counter() - t_start
            st.host_s = dict(self._timer.acc)
            st.gpu_ms = dict(self._gpu_ms)
        if self._error is not None:
            raise self._error
        if step_error is not None:
            raise step_error
        if source_error is not None:
            if hasattr(source_error, "add_note"):
                source_error.add_note(f"(raised by the frame source after {st.frames_in} frames; "
                                      f"{st.frames_out} outputs were delivered to the sink)")
            raise source_error
        return st

    def _drive(self) -> None:
        ring = self._in
        t = self._timer
        while True:
            t0 = time.perf_counter()
            try:
                slot, seq, info = ring.acquire_ready(None)
            except RingClosed as e:
                if isinstance(e, RingCancelled):
                    raise
                break
            except BaseException as e:
                if e is self._source_error:  # the source's own exception, re-raised in order by the ring
                    raise _SourceFailed(e) from None
                raise
            t1 = time.perf_counter()
            t.add("wait_input", t1 - t0)
            d = self._upload(slot, info)
            t.add("upload", time.perf_counter() - t1)
            self._guarded_step(self.step, DeviceFrame(d, info), info=info)
        if self.flush is not None:
            self._guarded_step(self.flush)

    def _guarded_step(self, fn, *args, info: Optional[FrameInfo] = None) -> None:
        try:
            self._run_step(fn, *args, info=info)
        except (RingClosed, _SourceFailed):
            raise
        except Exception as e:
            if self.drain_on_step_error:
                raise _StepFailed(e) from None
            raise

    def _join(self, threads: List[threading.Thread]) -> None:
        self._reaper_q.put(None)
        deadline = time.monotonic() + self.join_timeout
        for th in threads:
            th.join(max(0.0, deadline - time.monotonic()))
        leaked = [th for th in threads if th.is_alive()]
        if leaked:  # e.g. a source blocked inside next(): cancel and leave the daemon thread behind
            for r in (self._in, self._out):
                if r is not None:
                    r.cancel()
            self.stats.threads_leaked = len(leaked)


class _SourceFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__(repr(error))
        self.error = error


class _StepFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__(repr(error))
        self.error = error


# ---------------------------------------------------------------------------------------------------------------
class ChunkedModelStep:
    """A simple step for sequence models (BasicVSR-style ``(N, T, 3, H, W) -> (N, T, 3, sH, sW)``): collects
    ``window`` frames on the device (converted to RGB there), runs the model on each non-overlapping chunk and
    emits every output frame, converted back on the device to ``out_format`` (default yuv420p).

    The streaming Engine (``vsr_engine.engine``) owns the real windowing policy; this adapter exists so the
    pipeline and the benchmark can run a model end to end.
    """

    def __init__(self, model: torch.nn.Module, window: int = 30, dtype: torch.dtype = torch.float32,
                 out_format: str = "yuv420p", channels_last: bool = False, autocast: bool = False):
        if window < 1:
            raise ValueError("window must be >= 1")
        self.model = model
        self.window = int(window)
        self.dtype = dtype
        self.out_format = out_format
        self.channels_last = channels_last
        self.autocast = autocast
        self._frames: List[torch.Tensor] = []
        self._infos: List[FrameInfo] = []
        self.chunks = 0

    def __call__(self, frame: DeviceFrame):
        self._frames.append(frame.rgb(dtype=torch.float32 if self.autocast else self.dtype))
        self._infos.append(frame.info)
        if len(self._frames) >= self.window:
            return self._run()
        return None

    def flush(self):
        return self._run() if self._frames else None

    def _run(self) -> List[OutputFrame]:
        x = torch.stack(self._frames).unsqueeze(0)
        infos = self._infos
        self._frames, self._infos = [], []
        dev = x.device
        with torch.inference_mode():
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
            if self.autocast:
                with torch.autocast(dev.type, dtype=self.dtype):
                    y = self.model(x)
            else:
                y = self.model(x)
            self.chunks += 1
            y = y[0].float().clamp_(0, 1)
            return [OutputFrame.from_rgb(y[i], infos[i], fmt=self.out_format) for i in range(y.shape[0])]
