"""Streaming super-resolution: ``Engine(model).run(source, sink)`` with memory bounded by the window.

Windows
    Frames are processed in windows of ``window`` frames; every frame comes out exactly once, in order.
    Bidirectional recurrent models (BasicVSR, RealBasicVSR) are run *split*:

    * the forward branch is causal, so its hidden state is carried exactly from one window to the next (no left
      context is needed and none is recomputed);
    * the backward branch starts from zeros ``overlap`` frames after the window's last frame (lookahead frames
      are propagated but not reconstructed or emitted); at the end of the stream it is exact.

    Any other ``nn.Module`` taking (N, T, 3, H, W) is run as a black box on ``[s - overlap, e + overlap)`` and
    frames ``[s, e)`` are kept (first and last windows simply have less context).

    With ``window`` or ``overlap`` covering the whole clip the result equals whole-sequence processing.
    Memory holds at most ``window + overlap`` low-resolution frames and their features, never the video.

Pipeline
    Every run goes through :class:`~vsr_engine.pipeline.StreamPipeline`, on CPU and CUDA alike::

        decode thread -> source thread: stage planes into the (pinned) input ring (C++, GIL released)
        driver (caller) thread: H2D on a copy stream -> YUV->RGB on the device (the stream's matrix/range)
            -> window step (forward state, flow cache and backward features stay on the device)
            -> RGB->YUV in the output pixel format on the device
        download thread: D2H into pinned output slots on a second stream
        sink thread: encode (or PNG / callable / iterator), window commits for resume, progress

    The driver never waits for the host per frame (no ``.cpu()``, ``.item()`` or synchronize); on CPU the same
    code runs without streams and events. ``RunSummary.stages`` has each stage's busy time and ``bound_by``
    names the busiest.

Resume
    At each window end a resumable sink (video file, frame folder) commits the frames written so far together
    with the carried state (forward feature and last input frame, a few MB), so an interrupted run continues
    exactly where it stopped (``run(..., resume=True)``) without recomputing finished frames.
"""
from __future__ import annotations

import copy
import os
import queue
import threading
import time
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from .io.stage import open_staged_source, staged_frames
from .io.unstage import deliver, device_output_format
from .pipeline import OutputFrame, StreamPipeline
from .summary import RunSummary, _PeakMemory, stage_times
from .video import FrameInfo, VsrError, VsrInputError, VsrOutputError, open_sink, open_source  # noqa: F401
from .io.sinks import Sink
from . import memory as _memory
from .window import BlackBox, SplitBidirectional, keep_fp32, unwrap
from .window import SlidingWindow, is_sliding

__all__ = ["Engine", "RunSummary", "VsrError", "VsrInputError", "VsrOutputError", "DEFAULT_WINDOW",
           "DEFAULT_OVERLAP", "resolve_device", "resolve_dtype"]

# Chosen from bench/bench_window.py on Vid4 walk (official BasicVSR Vimeo-BI): see README "Streaming".
DEFAULT_WINDOW = 32
DEFAULT_OVERLAP = 8
# Default dtype on CUDA: fp16 (bench/bench_fidelity.py: fp16 vs fp32 RGB PSNR >= 50 dB on real frames with the
# official BasicVSR weights, SPyNet kept fp32); CPU stays fp32 (torch's CPU fp16 convolutions are slow).
CUDA_DEFAULT_DTYPE = torch.float16

_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
           "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device=None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise VsrInputError(f"unknown device {device!r} (use cpu, cuda, cuda:1, ...)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise VsrInputError(f"device {device} requested but CUDA is not available (torch {torch.__version__})")
    return dev


def resolve_dtype(dtype=None, device: Optional[torch.device] = None) -> torch.dtype:
    """``None``: fp16 on CUDA, fp32 elsewhere. ``auto``: fp16 on CUDA, the CPU plan's dtype on a CPU
    (``vsr_engine.cpu_plan``: bf16 where the CPU has bf16 hardware). Else fp32 / fp16 / bf16 by name."""
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if dtype is None:
        return CUDA_DEFAULT_DTYPE if on_cuda else torch.float32
    if str(dtype) == "auto":
        if on_cuda:
            return CUDA_DEFAULT_DTYPE
        from .cpu_plan import plan
        return plan()["dtype"]  # type: ignore[return-value]
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise VsrInputError(f"unsupported dtype {dtype}; choose from fp32, fp16, bf16")
        return dtype
    d = _DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if d is None:
        raise VsrInputError(f"unknown dtype {dtype!r}; choose from fp32, fp16, bf16")
    return d


def _fast_default(device: torch.device, dtype: torch.dtype, auto: bool) -> bool:
    """Whether the fast step runs when ``fast`` is not given: on CUDA in fp16/bf16; on a CPU for ``dtype='auto'``
    (the CPU plan) and for bf16. ``VSR_ENGINE_FAST=0`` turns the default off."""
    if os.environ.get("VSR_ENGINE_FAST", "1") == "0":
        return False
    if device.type == "cuda":
        return dtype in (torch.float16, torch.bfloat16)
    return auto or dtype == torch.bfloat16


def _fast_step(core, device: torch.device, dtype: torch.dtype, fast: Optional[bool], auto: bool = False,
               cleaner=None, master=None):
    """The FastBasicVSR serving ``core`` in this Engine, or None (see Engine's ``fast``)."""
    from . import fast as _fast
    if fast is False or not _fast.supported(core):
        if fast:
            raise VsrInputError(f"fast=True: {type(core).__name__} has no fast step")
        return None
    if fast is None and not _fast_default(device, dtype, auto):
        return None
    return _fast.FastBasicVSR(core, dtype, cleaner=cleaner, master=master)


class Engine:
    """Streaming video super-resolution.

    ``model``: a registered name (``vsr_engine.model_names()``) or a built ``nn.Module`` taking (N, T, 3, H, W)
    RGB in [0, 1]. ``weights``: checkpoint path, ``None`` for the official weights (``variant``), ``False``
    for random init (tests). ``device``: default CUDA when available, else CPU. ``dtype``: fp32, fp16, bf16
    (default fp16 on CUDA, fp32 on CPU); in fp16/bf16 SPyNet stays fp32 (``spynet_fp32``; default: fp32 except
    on the fast step in fp16), flow-warp coordinates and the output clamp/round are fp32. ``window``/``overlap``: see the module docstring. ``mode``: ``auto``
    (split for BasicVSR-style models, else black box), ``split`` or ``blackbox`` (symmetric context windows,
    for comparison). ``fast``: the fast step (``vsr_engine.fast``: channels-last, fused epilogues, CUDA graphs) for
    BasicVSR-style models; default on for CUDA in fp16/bf16 (``VSR_ENGINE_FAST=0`` turns the default off), ``True``
    forces it (any device: tests), ``False`` never. Extra keyword arguments go to the model.
    """

    def __init__(self, model: Union[str, nn.Module] = "realbasicvsr", weights=None, device=None, dtype=None,
                 window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP, variant: Optional[str] = None,
                 queue_size: int = 8, mode: str = "auto", spynet_fp32: Optional[bool] = None, tile: Optional[int] = None,
                 memory_limit=None, fast: Optional[bool] = None, scene_cuts=None, scene_sad: Optional[float] = None,
                 **model_kwargs):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self._auto_dtype = isinstance(dtype, str) and dtype == "auto"
        window, overlap = int(window), int(overlap)
        if window < 1:
            raise VsrInputError(f"window must be at least 1 frame (got {window})")
        if overlap < 0:
            raise VsrInputError(f"overlap must be 0 or more frames (got {overlap})")
        self.window, self.overlap = window, overlap
        # memory plan (vsr_engine.memory): tile None = automatic, 0 = never, N = tiles of about N x N LR pixels
        self.tile = None if tile is None else int(tile)
        if self.tile is not None and self.tile < 0:
            raise VsrInputError(f"tile must be 0 (never tile) or a size in pixels (got {tile})")
        self.memory_limit = None if memory_limit is None else _memory.parse_bytes(memory_limit)
        self.queue_size = queue_size
        # scene cuts (vsr_engine.scenecut): None = off; else the histogram threshold. Each cut is a clip boundary.
        from .scenecut import DEFAULT_SAD, parse_scene_cuts
        self.scene_cuts = parse_scene_cuts(scene_cuts)
        self.scene_sad = DEFAULT_SAD if scene_sad is None else float(scene_sad)
        if isinstance(model, nn.Module):
            self.model = model
            self.model_name = type(model).__name__.lower()
        else:
            from .models import load_model
            self.model_name = str(model).lower()
            self.model = load_model(self.model_name, weights=weights, variant=variant, **model_kwargs)
        self.variant = variant
        # sliding-window models (TDAN) restore frame t from frames t-r .. t+r: windows keep r frames of context
        # each side, so windowed output equals the whole clip (the model's own edge policy at the clip ends)
        radius = int(getattr(self.model, "temporal_radius", 0) or 0)
        if overlap < radius:
            self.overlap = overlap = radius
        # SPyNet in fp32 by default, except on the fast step in fp16/bf16, where real frames measured the same
        # fidelity with SPyNet in the 16-bit dtype (bench/results/fast_fidelity_cpu.json: fp16 67.56 vs 67.61 dB,
        # bf16 49.59 vs 49.66 dB vs fp32) at much less cost
        from . import fast as _fast
        core0, _ = unwrap(self.model)
        fast_half = (fast is not False and self.dtype in (torch.float16, torch.bfloat16) and core0 is not None
                     and mode != "blackbox" and _fast.supported(core0)
                     and (fast or _fast_default(self.device, self.dtype, self._auto_dtype)))
        self.spynet_fp32 = (not fast_half) if spynet_fp32 is None else bool(spynet_fp32)
        # the caller's module is not cast in place (a second Engine on it must still see its fp32 weights)
        own_copy = isinstance(model, nn.Module) and any(p.is_floating_point() and p.dtype != self.dtype
                                                        for p in model.parameters())
        if own_copy:
            self.model = copy.deepcopy(self.model)
        # the fast step makes its own weights (bf16 casts that keep each kernel's tap sum, fp32 islands) from the
        # fp32 values, which the module cast below (in place) loses: the caller's untouched core where it is already
        # on the device, else a copy taken before the cast
        master = None
        if fast_half and next(core0.parameters()).dtype == torch.float32:
            on_device = next(core0.parameters()).device == self.device
            master = core0 if own_copy and on_device else copy.deepcopy(core0).to(self.device)
        self.model = keep_fp32(self.model.eval().to(self.device), self.dtype, self.spynet_fp32)
        for p in self.model.parameters():
            p.requires_grad_(False)
        sc = getattr(self.model, "scale", None)
        self.scale = (int(sc) if float(sc).is_integer() else float(sc)) if sc else None
        core, cleaner = unwrap(self.model)
        if mode not in ("auto", "split", "blackbox"):
            raise VsrInputError(f"unknown mode {mode!r}; choose auto, split or blackbox")
        if mode == "split" and core is None:
            raise VsrInputError(f"{type(self.model).__name__} is not a BasicVSR-style model; it can only run as a "
                                "black box")
        self.fast = None  # vsr_engine.fast.FastBasicVSR when the fast step serves this model (see ``fast``)
        if core is not None and mode != "blackbox":
            self.fast = _fast_step(core, self.device, self.dtype, fast, self._auto_dtype, cleaner, master)
            self._proc = SplitBidirectional(core, cleaner, fast=self.fast)
            self.mode = "split"
        elif is_sliding(self.model) and mode != "blackbox":
            # sliding-window models (DUF, any model with ``temporal_radius``): exact at any window; the lookahead
            # and the left context are the model's radius, whatever ``overlap`` was asked for
            self._proc = SlidingWindow(self.model)
            self.overlap = self._proc.radius
            self.mode = "sliding"
        else:
            self._proc = BlackBox(self.model, overlap)
            self.mode = "blackbox"
        # the dtype frames are staged in: fp32 where the fast step keeps fp32 islands (its entry convolutions and
        # bilinear base read the frames in fp32; bf16's 8-bit mantissa would re-round the 8-bit input levels)
        self.stage_dtype = torch.float32 if self.fast is not None and self.fast.islands else self.dtype
        self.last_summary: Optional[RunSummary] = None

    # called with the number of frames done after each committed window (tests use it to interrupt a run)
    _after_window: Optional[Callable[[int], None]] = None

    def __repr__(self):
        return (f"Engine({self.model_name}, device={self.device}, dtype={str(self.dtype).replace('torch.', '')}, "
                f"window={self.window}, overlap={self.overlap}, mode={self.mode})")

    def plan(self) -> str:
        """How this Engine computes, in one line (the run summary's ``plan``)."""
        dt = str(self.dtype).replace("torch.", "")
        if self.fast is None:
            return f"{dt} {self.mode} (module forward)"
        how = "CUDA graphs" if self.fast.graphs else ("oneDNN fused convs" if self.device.type == "cpu" else "eager")
        isl = f", fp32 islands {'+'.join(self.fast.islands)}" if self.fast.islands else ""
        s = f"{dt} fast step (channels-last, {how}{isl}; SPyNet {str(self.fast.flow_dtype).replace('torch.', '')})"
        if self.device.type == "cpu" and self._auto_dtype:
            from .cpu_plan import describe
            s += f"; {describe()}"
        return s

    def host_threads(self):
        """Decoder / copy / encoder thread counts for a run now, sized against the compute
        (``vsr_engine.host_threads.plan``)."""
        from . import host_threads
        return host_threads.plan(self.device)

    @property
    def weights_path(self) -> Optional[str]:
        return getattr(self.model, "weights_path", None)

    def settings(self) -> dict:
        """What determines the output: a resumed run must match these."""
        return {"model": self.model_name, "variant": self.variant, "weights": self.weights_path,
                "window": self.window, "overlap": self.overlap, "dtype": str(self.dtype).replace("torch.", ""),
                "scale": self.scale, "mode": self.mode,
                **({"scene_cuts": [self.scene_cuts, self.scene_sad]} if self.scene_cuts is not None else {})}

    def output_size(self, width: int, height: int) -> Tuple[int, int]:
        """(W, H) of the output for a ``width`` x ``height`` input (models may define ``output_size(h, w)``)."""
        f = getattr(self.model, "output_size", None)
        if callable(f):
            oh, ow = f(height, width)
            return int(ow), int(oh)
        from .ops.meta_upscale import meta_out_size
        oh, ow = meta_out_size(height, width, self.scale)
        return ow, oh

    # -- public API ----------------------------------------------------------------------------------------
    def run(self, source, sink=None, *, resume: bool = False, force: bool = False, fps=None,
            progress: Optional[Callable[[int, Optional[int], float], None]] = None,
            codec: str = "libx264", crf: Optional[float] = 18, preset: Optional[str] = "medium",
            pix_fmt: Optional[str] = None, options: Optional[dict] = None, copy_streams: bool = True,
            encoder_threads: Optional[int] = None):
        """Upscale ``source`` (video path, image folder, PyAV input container, or iterable of frames).

        Without ``sink``: returns an iterator of output frames (H*s x W*s x 3 uint8 RGB), produced as they are
        ready; ``self.last_summary`` is set when it is exhausted. With ``sink`` (video path, folder path for PNG
        frames, or a callable taking each frame): writes there and returns a :class:`RunSummary`.
        ``progress(done, total_or_None, seconds)`` is called after every frame (on the sink thread).
        Encoding options (``codec``, ``crf``, ``preset``, ``pix_fmt``, ``options``, ``encoder_threads``: the
        encoder's threads, 0 = its default) apply to video sinks.
        """
        if sink is None:
            return self._iter(source, fps=fps, progress=progress)
        if encoder_threads is None and not (options or {}).get("threads"):
            encoder_threads = self.host_threads().encoder or None  # sized against the compute (host_threads.py)
        if encoder_threads is not None:
            options = {**(options or {}), "threads": str(int(encoder_threads))}
        inputs = [os.fspath(source)] if isinstance(source, (str, os.PathLike)) else []
        sink_obj = open_sink(sink, inputs=inputs, force=force, resume=resume, settings=self.settings(),
                             codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, options=options,
                             copy_streams=copy_streams)
        return self._run_to_sink(source, sink_obj, fps=fps, progress=progress)

    def upscale_frames(self, frames) -> List[np.ndarray]:
        """Convenience: a list of frames in, the list of output frames out."""
        return list(self.run(frames))

    def _step_window(self, proc, x: torch.Tensor, s: int, n_emit: int,
                     left: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """The one place a window is stepped: frames ``x`` (1, L, 3, h, w) starting at ``s - left`` through this
        run's processor ``proc`` (the memory governor around ``self._proc``: window size, tiles, back-off);
        yields ``(index, (3, sH, sW))`` for frames ``s .. s + n_emit - 1``."""
        return proc.process(x, s, n_emit, left=left)

    # -- driving -------------------------------------------------------------------------------------------
    def _open(self, source, start: int, fps):
        left = self._proc.left_context()
        return open_staged_source(source, start=max(0, start - left) if start else 0, fps=fps,
                                  queue_size=self.queue_size, threads=self.host_threads().decoder)

    def _iter(self, source, fps=None, progress=None) -> Iterator[np.ndarray]:
        """Iterator output: the pipeline runs on a driver thread; frames come through a small queue."""
        summary = RunSummary()
        src = self._open(source, 0, fps)
        stop = threading.Event()
        q: "queue.Queue" = queue.Queue(maxsize=2)
        sink = _QueueSink(q, stop)

        def work():
            try:
                self._pipeline(src, sink, 0, None, summary, progress)
                item = _END
            except BaseException as e:  # re-raised in the consumer
                item = e
            _put(q, item, stop)

        th = threading.Thread(target=work, name="vsr-driver", daemon=True)
        th.start()
        try:
            while True:
                item = q.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            th.join()
            src.close()
            self.last_summary = summary

    def _run_to_sink(self, source, sink, fps=None, progress=None) -> RunSummary:
        summary = RunSummary()
        start, carry = sink.resume_point()
        src = None
        try:
            src = self._open(source, start, fps)
            sink.prepare(src.info)
            self._pipeline(src, sink, start, carry, summary, progress, want_state=getattr(sink, "resumable", False))
            if summary.frames_out == 0:
                raise VsrInputError(f"{getattr(src.info, 'path', None) or 'input'}: no frames to upscale"
                                    + (f" after frame {start}" if start else ""))
            summary.output = sink.finish()
            for warn in (getattr(sink, "copy_warning", None), getattr(sink, "loss_warning", None)):
                if warn:   # audio/subtitle packets or frames lost on the way out: the output is incomplete
                    summary.warnings.append(warn)
                    summary.complete = False
        except BaseException as e:
            sink.abort(e)
            raise
        finally:
            if src is not None:
                src.close()
            self.last_summary = summary
        return summary

    def _pipeline(self, src, sink, start: int, carry: Optional[dict], summary: RunSummary, progress,
                  want_state: bool = False) -> None:
        """One run: frames of ``src`` through the window step into ``sink``, with ``summary`` filled in."""
        proc = _memory.Governor(self._proc, device=self.device, dtype=self.dtype, window=self.window,
                                overlap=self.overlap, scale=self.scale, tile=self.tile,
                                memory_limit=self.memory_limit, summary=summary)
        proc.reset()
        summary.device, summary.dtype = str(self.device), str(self.dtype).replace("torch.", "")
        host = self.host_threads()
        summary.plan = f"{self.plan()}; {host.describe()}"
        summary.window, summary.overlap = self.window, self.overlap
        summary.resumed_from = summary.frames_out = summary.frames_in = start
        summary.scene_cuts = [] if self.scene_cuts is not None else None
        scene_carry = {k: v for k, v in (carry or {}).items() if k.startswith("scene_")}
        carry = {k: v for k, v in (carry or {}).items() if not k.startswith("scene_")} or None
        if carry is not None:
            proc.load_state(carry, self.device, self.stage_dtype)
        info = src.info
        if getattr(info, "width", None) and getattr(info, "height", None):
            summary.input_size = (info.width, info.height)
            if self.scale:
                summary.output_size = self.output_size(info.width, info.height)
        fmt, colour_kw = device_output_format(sink)
        step = _WindowStep(self, proc, summary, start, fmt, colour_kw, want_state, scene_carry)
        with _PeakMemory(self.device) as mem:
            t0 = time.perf_counter()
            writer = _SinkSide(self, sink, src, summary, progress, t0, mem)
            cuda = self.device.type == "cuda"
            pipe = StreamPipeline(step, writer, flush=step.flush, device=self.device, in_slots=3, out_slots=3,
                                  drain_on_step_error=True,
                                  pending_outputs=max(2, self.window if cuda else min(self.window, 8)),
                                  profile=cuda, copy_threads=host.copy)
            try:
                pipe.run(staged_frames(src))
            finally:
                summary.stages = stage_times(pipe.stats.host_s, pipe.stats.gpu_ms)
                busy = {k: v for k, v in summary.stages.items() if v > 0}
                summary.bound_by = max(busy, key=busy.get) if busy else ""
            if not writer.opened and summary.output_size != (0, 0):
                sink.open(info, *summary.output_size)
            self._finish_summary(summary, src, mem, t0)

    def _finish_summary(self, summary: RunSummary, src, mem: _PeakMemory, t0: float):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        mem.__exit__(None, None, None)
        summary.seconds = time.perf_counter() - t0
        summary.fps = summary.frames_computed / summary.seconds if summary.seconds > 0 else 0.0
        summary.peak_memory_bytes = int(mem.peak)
        summary.peak_memory_increase_bytes = int(max(0, mem.peak - mem.start))
        summary.memory_kind = mem.kind
        rep = src.damage_report(written=summary.frames_out)   # frame accounting: read vs decoded vs written
        if rep:
            summary.warnings.append(rep)
            summary.complete = False


# ---------------------------------------------------------------------------------------------------------------
# the pipeline's step (driver thread) and sink (sink thread)
# ---------------------------------------------------------------------------------------------------------------
class _WindowMark:
    """A zero-byte output that follows the last frame of a window: the sink commits ``done`` frames with
    ``state`` (device copies, brought to the host on the sink thread, after the window's work is done)."""
    __slots__ = ("done", "state")

    def __init__(self, done: int, state: Optional[dict]):
        self.done, self.state = done, state


class _WindowStep:
    """Pipeline step: converts each uploaded frame to RGB on the device, keeps the window's frames there, and
    when a window plus its lookahead is in, steps it (``Engine._step_window``) and produces the outputs lazily,
    each converted on the device to the sink's format, then a window mark. Nothing here waits for the host."""

    def __init__(self, engine: Engine, proc, summary: RunSummary, start: int, fmt: str, colour_kw: dict,
                 want_state: bool, scene_carry: Optional[dict] = None):
        self.e = engine
        self.proc = proc                       # memory governor: plans the window (and tiles) on the first frame
        self.W = engine.window
        self.summary = summary
        self.fmt, self.colour_kw = fmt, colour_kw
        self.want_state = want_state
        self.left = proc.left_context()
        self.buf: List[torch.Tensor] = []     # (3, h, w) frames on the device, absolute indices buf_start ...
        self.infos: List[FrameInfo] = []
        self.buf_start: Optional[int] = None
        self.s = start                         # next frame to emit
        self.size: Optional[Tuple[int, int]] = None
        # scene cuts: each one is a clip boundary (state reset, no window / lookahead / context across it)
        self.det = None
        self.scene_start = 0                   # first frame of the current scene
        self.cuts: List[int] = []              # resolved cuts > scene_start, ascending, not yet reached
        self.cut_set: set = set()              # every cut found
        self.pending: List[Tuple[int, torch.Tensor]] = []   # (index, device flag) not yet brought to the host
        self.stats: list = []                  # detector statistics of the buffered frames (for resume)
        if engine.scene_cuts is not None:
            from .scenecut import SceneCutDetector
            self.det = SceneCutDetector(engine.scene_cuts, engine.scene_sad)
            sc = scene_carry or {}
            if "scene_start" in sc:
                self.scene_start = int(sc["scene_start"])
            if self.left == 0 and start:       # the source starts at `start`: frame start-1's statistics
                self.det.load_state(sc, engine.device)

    def _resolve(self):
        """Bring the pending cut flags to the host (one transfer for all of them)."""
        if not self.pending:
            return
        flags = torch.stack([f for _, f in self.pending]).tolist()
        for (i, _), f in zip(self.pending, flags):
            if f and i > self.scene_start:
                self.cuts.append(i)
                self.cut_set.add(i)
                if self.summary.scene_cuts is not None:
                    self.summary.scene_cuts.append(i)
        self.pending.clear()

    def _scene_end(self) -> Optional[int]:
        """The first known cut after the frame to emit next (the end of its scene), or None."""
        while self.cuts and self.cuts[0] <= self.s:
            self.cuts.pop(0)
        return self.cuts[0] if self.cuts else None

    def __call__(self, frame):
        fi = frame.info.user
        if fi is None:  # a bare pipeline frame (not from staged_frames)
            fi = FrameInfo(index=frame.info.index)
        lay = frame.layout
        if self.size is None:
            self.size = (lay.width, lay.height)
            self.summary.input_size = self.size
            self.W = self.proc.plan_for(*self.size)   # memory plan before the first window: window, tiles
        with torch.inference_mode():
            self.buf.append(frame.rgb(dtype=self.e.stage_dtype))
        self.infos.append(fi)
        if self.det is not None:
            with torch.inference_mode():
                self.pending.append((fi.index, self.det.push(self.buf[-1])))
            self.stats.append(self.det.prev)
        if self.buf_start is None:
            self.buf_start = fi.index
        self.summary.frames_in = max(self.summary.frames_in, fi.index + 1)
        W, O = self.W, self.e.overlap
        if self.buf_start + len(self.buf) >= self.s + W + O:
            return self._windows()
        return None

    def _windows(self) -> Iterator[OutputFrame]:
        yield from self._window(final=False)
        if self.det is not None:   # whole scenes that ended before the buffered frames do
            while self._scene_end() is not None:
                yield from self._window(final=False)

    def flush(self):
        while self.buf_start is not None and self.s < self.buf_start + len(self.buf):
            yield from self._window(final=True)

    def _window(self, final: bool) -> Iterator[OutputFrame]:
        W, O, left = self.W, self.e.overlap, self.left
        s, bs = self.s, self.buf_start
        avail_end = bs + len(self.buf)
        cut = None
        if self.det is not None:
            self._resolve()
            if s in self.cut_set and s > self.scene_start:   # a new scene starts here: a new clip
                self.scene_start = s
                self.proc.reset_state()
            cut = self._scene_end()
        # window [s, e) with lookahead up to la_end; at the end, when the rest fits in window+overlap, take it all.
        # A scene cut ends the scene as the end of a clip would (clip alone: the rest is taken whole only when
        # shorter than window+overlap, since a full window+overlap of it would have started a window already).
        if cut is not None and cut - s < W + O:
            e = la_end = cut
        elif final and cut is None and avail_end - s <= W + O:
            e = la_end = avail_end
        else:
            e = min(s + W, avail_end)
            la_end = min(e + O, avail_end, cut if cut is not None else avail_end)
        lo = max(bs, s - left, self.scene_start) if left else s
        z = self.scene_start   # the processor sees every scene as a clip starting at frame 0
        with torch.inference_mode():
            x = torch.stack(self.buf[lo - bs:la_end - bs]).unsqueeze(0)
            gen = self.e._step_window(self.proc, x, s - z, e - s, s - lo)
            del x
        while True:
            with torch.inference_mode():
                try:
                    i, y = next(gen)
                except StopIteration:
                    break
                i += z
                out = OutputFrame.from_rgb(y, self.infos[i - bs], fmt=self.fmt, **self.colour_kw)
                del y
            yield out
        self.s = e
        state = None
        if self.want_state:
            state = _memory.snapshot(self.proc.state())
            if self.det is not None:   # where the scene started and frame e-1's statistics, for resume
                luma, hist = self.stats[e - 1 - bs]
                state = dict(state or {}, scene_start=torch.tensor(self.scene_start, dtype=torch.int64),
                             scene_prev_luma=luma.clone(), scene_prev_hist=hist.clone())
        dev = self.e.device
        yield OutputFrame(torch.empty(0, dtype=torch.uint8, device=dev), _WindowMark(e, state))
        # drop frames no longer needed (keep `left` frames of context for black-box models)
        keep_from = max(bs, e - left) if left else e
        drop = keep_from - bs
        if drop > 0:
            del self.buf[:drop]
            del self.infos[:drop]
            del self.stats[:drop]
            self.buf_start = keep_from


class _SinkSide:
    """Pipeline sink (sink thread, output order): opens the sink on the first frame, writes frames, commits
    window marks (with the carried state, for resume), reports progress."""

    def __init__(self, engine: Engine, sink, src, summary: RunSummary, progress, t0: float, mem: _PeakMemory):
        self.e, self.sink, self.src, self.summary = engine, sink, src, summary
        self.progress, self.t0, self.mem = progress, t0, mem
        self.total = getattr(src.info, "frames", None)
        self.opened = False

    def __call__(self, hf) -> None:
        info, sm = hf.info, self.summary
        if isinstance(info, _WindowMark):
            self.mem.sample()
            self.sink.commit(info.done, _cpu_state(info.state))
            hook = type(self.e)._after_window
            if hook is not None:
                hook(info.done)
            return
        if not self.opened:
            wh = (hf.layout.width, hf.layout.height)
            sm.output_size = wh
            if self.e.scale is None and sm.input_size[1]:
                self.e.scale = wh[1] // sm.input_size[1]
            self.sink.open(self.src.info, *wh)
            self.opened = True
        deliver(self.sink, hf, info)
        sm.frames_out += 1
        sm.frames_computed += 1
        if self.progress is not None:
            self.progress(sm.frames_out, self.total, time.perf_counter() - self.t0)


def _cpu_state(st: Optional[dict]) -> Optional[dict]:
    if st is None:
        return None
    # copies (not views: torch.save of a view would store its whole window), fp32 on the CPU
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype, copy=True)
            for k, v in st.items()}


# ---------------------------------------------------------------------------------------------------------------
# iterator output
# ---------------------------------------------------------------------------------------------------------------
_END = object()


class _Stopped(Exception):
    """The consumer of an iterator run stopped early."""


def _put(q: "queue.Queue", item, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return
        except queue.Full:
            continue


class _QueueSink(Sink):
    def __init__(self, q: "queue.Queue", stop: threading.Event):
        self.q, self.stop = q, stop

    def write(self, rgb, finfo):
        _put(self.q, rgb, self.stop)
        if self.stop.is_set():
            raise _Stopped()
