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

Resume
    At each window end a resumable sink (video file, frame folder) commits the frames written so far together
    with the carried state (forward feature and last input frame, a few MB), so an interrupted run continues
    exactly where it stopped (``run(..., resume=True)``) without recomputing finished frames.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
from collections import OrderedDict
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from . import memory as _memory
from .video import FrameInfo, VsrError, VsrInputError, VsrOutputError, open_sink, open_source  # noqa: F401

__all__ = ["Engine", "RunSummary", "VsrError", "VsrInputError", "VsrOutputError", "DEFAULT_WINDOW",
           "DEFAULT_OVERLAP", "resolve_device", "resolve_dtype"]

# Chosen from bench/bench_window.py on Vid4 walk (official BasicVSR Vimeo-BI): see README "Streaming".
DEFAULT_WINDOW = 32
DEFAULT_OVERLAP = 8

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
    if dtype is None or str(dtype) == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    d = _DTYPES.get(str(dtype).lower().replace("torch.", ""))
    if d is None:
        raise VsrInputError(f"unknown dtype {dtype!r}; choose from fp32, fp16, bf16")
    return d


@dataclasses.dataclass
class RunSummary:
    """What :meth:`Engine.run` did."""
    frames_in: int = 0                 # input frames seen (including frames already done before a resume)
    frames_out: int = 0                # output frames delivered (ditto)
    frames_computed: int = 0           # frames super-resolved in this run
    resumed_from: int = 0              # frames taken from an earlier interrupted run
    seconds: float = 0.0
    fps: float = 0.0                   # frames_computed / seconds
    peak_memory_bytes: int = 0         # CUDA: peak allocated on the device; CPU: peak process RSS
    peak_memory_increase_bytes: int = 0  # peak minus the level at the start of the run
    memory_kind: str = ""
    device: str = ""
    dtype: str = ""
    window: int = 0
    overlap: int = 0
    input_size: Tuple[int, int] = (0, 0)
    output_size: Tuple[int, int] = (0, 0)
    output: Optional[str] = None
    warnings: List[str] = dataclasses.field(default_factory=list)
    complete: bool = True              # False when the input was damaged/truncated (what decoded was upscaled)
    window_used: int = 0               # window the memory plan chose (<= window), after any back-off
    tiles: str = ""                    # spatial tiles ("2x3") when the frame did not fit, else ""
    backoffs: List[str] = dataclasses.field(default_factory=list)  # allocation failures recovered from

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __getitem__(self, k):
        return getattr(self, k)

    def line(self) -> str:
        mem = self.peak_memory_bytes / 2 ** 20
        s = (f"{self.frames_out} frames ({self.input_size[0]}x{self.input_size[1]} -> {self.output_size[0]}x"
             f"{self.output_size[1]}) in {self.seconds:.1f} s, {self.fps:.2f} fps, peak memory {mem:.0f} MiB "
             f"({self.memory_kind}) on {self.device}")
        if self.window_used:
            s += f"; window {self.window_used}" + (f", tiles {self.tiles}" if self.tiles else "")
        if self.backoffs:
            s += f" after {len(self.backoffs)} out-of-memory back-off(s)"
        if self.resumed_from:
            s += f"; resumed after {self.resumed_from} frames"
        if not self.complete:
            s += "; INPUT INCOMPLETE (see warning)"
        return s


class _PeakMemory:
    """Peak memory during a run: CUDA allocator peak, or process RSS sampled on a thread (CPU)."""

    def __init__(self, device: torch.device, interval: float = 0.005):
        self.device = device
        self.interval = interval
        self.kind = "cuda allocated" if device.type == "cuda" else "process RSS"
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._t: Optional[threading.Thread] = None

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):  # not Linux
            import resource
            r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return int(r if sys.platform == "darwin" else r * 1024)

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = self.peak = torch.cuda.memory_allocated(self.device)
        else:
            self.start = self.peak = self.rss()
            self._t = threading.Thread(target=self._sample, name="vsr-mem", daemon=True)
            self._t.start()
        return self

    def _sample(self):
        while not self._stop.wait(self.interval):
            r = self.rss()
            if r > self.peak:
                self.peak = r

    def sample(self):
        if self.device.type != "cuda":
            r = self.rss()
            if r > self.peak:
                self.peak = r

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            if self._t is not None:
                self._t.join()
            self.sample()


# ---------------------------------------------------------------------------------------------------------------
# The window processors
# ---------------------------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module):
    """(bidirectional core, cleaner or None) for BasicVSR-like models, else (None, None)."""
    from .models.basicvsr import BasicVSR
    from .models.dscvsr import DSCVSR
    from .models.realbasicvsr import RealBasicVSR
    if isinstance(model, DSCVSR):
        return model, None
    if isinstance(model, RealBasicVSR):
        return model.basicvsr, model
    if isinstance(model, BasicVSR):
        return model, None
    need = ("spynet", "propagate", "upsample", "backward_trunk", "forward_trunk", "num_feat")
    if all(hasattr(model, a) for a in need):
        return model, None
    return None, None


class _SplitBidirectional:
    """BasicVSR-style model run window by window: exact carried forward state, lookahead-limited backward."""

    def __init__(self, core, cleaner=None, max_flow_cache: int = 64):
        self.core = core
        self.cleaner = cleaner
        self.feat_f: Optional[torch.Tensor] = None   # forward feature of the last emitted frame
        self.prev_x: Optional[torch.Tensor] = None   # its (cleaned) input frame (1, 3, h, w)
        self.flow_cache: "OrderedDict[int, torch.Tensor]" = OrderedDict()  # backward flow of pair (i, i+1)
        self.max_flow_cache = max_flow_cache

    def reset(self):
        self.feat_f = self.prev_x = None
        self.flow_cache.clear()

    def state(self) -> Optional[dict]:
        """Everything the next window depends on (so a resumed run is identical to an uninterrupted one)."""
        if self.feat_f is None:
            return None
        st = {"feat_f": self.feat_f, "prev_x": self.prev_x}
        if self.flow_cache:
            keys = sorted(self.flow_cache)
            st["flow_index"] = torch.tensor(keys, dtype=torch.int64)
            st["flows"] = torch.cat([self.flow_cache[k] for k in keys])
        return st

    def load_state(self, st: dict, device, dtype):
        self.feat_f = st["feat_f"].to(device, dtype)
        self.prev_x = st["prev_x"].to(device, dtype)
        self.flow_cache.clear()
        if "flows" in st:
            for k, f in zip(st["flow_index"].tolist(), st["flows"]):
                self.flow_cache[int(k)] = f.unsqueeze(0).to(device, dtype)

    def left_context(self) -> int:
        return 0

    def process(self, x: torch.Tensor, s: int, n_emit: int, left: int = 0) -> Iterator[Tuple[int, torch.Tensor]]:
        """``x``: (1, L, 3, h, w) frames ``s .. s+L-1``; yields ``(i, output (3, sH, sW))`` for frames
        ``s .. s+n_emit-1`` one at a time (so at most one output frame is alive)."""
        core = self.core
        L = x.shape[1]
        if self.cleaner is not None:
            x, _ = self.cleaner.clean(x)
        # backward flows of pairs (i, i+1), i in [s, s+L-1): reuse those computed as lookahead last time
        need = [i for i in range(s, s + L - 1) if i not in self.flow_cache]
        if need:
            a = torch.cat([x[:, i - s] for i in need])
            b = torch.cat([x[:, i - s + 1] for i in need])
            fl = core.spynet(a, b)
            for k, i in enumerate(need):
                self.flow_cache[i] = fl[k:k + 1]
        flows_b = (torch.stack([self.flow_cache[i][0] for i in range(s, s + L - 1)]).unsqueeze(0)
                   if L > 1 else None)
        dsc = hasattr(core, "backward_rf")  # DSCVSR: filling parity needs absolute indices, its own step/upsample
        if dsc:
            feats_b = core.propagate(x, flows_b, core.backward_rf, core.backward_fill, backward=True,
                                     first_index=s)[0][:n_emit]
        else:
            feats_b = core.propagate(x, flows_b, core.backward_trunk, backward=True)[:n_emit]
        for i in [k for k in self.flow_cache if k < s + n_emit]:
            del self.flow_cache[i]
        while len(self.flow_cache) > self.max_flow_cache:
            self.flow_cache.popitem(last=False)
        # forward flows (i -> i-1) for the emitted frames, the first one from the carried previous frame
        cur = [x[:, k] for k in range(n_emit)]
        prevs = ([self.prev_x] if self.prev_x is not None else []) + cur[:-1]
        tgt = cur if self.prev_x is not None else cur[1:]
        flows_f = core.spynet(torch.cat(tgt), torch.cat(prevs)) if tgt else None
        feat = self.feat_f
        off = 0 if self.prev_x is not None else 1
        for k in range(n_emit):
            flow = flows_f[k - off:k - off + 1] if feat is not None else None
            if dsc:
                feat = core.step(x[:, k], feat, flow, core.forward_rf, core.forward_fill, s + k)[0]
                out = core.reconstruct(x[:, k], feats_b[k], feat, core.scale)
            else:
                if feat is not None:
                    feat = _flow_warp(feat, flow)
                feat = core.propagate(x[:, k:k + 1], None, core.forward_trunk, backward=False, feat=feat)[0]
                out = core.upsample(x[:, k], feats_b[k], feat)
            feats_b[k] = None
            self.feat_f = feat
            self.prev_x = x[:, k]
            yield s + k, out[0]


def _flow_warp(feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    from . import ops
    return ops.flow_warp(feat, flow.permute(0, 2, 3, 1))


class _BlackBox:
    """Any (N, T, 3, H, W) -> (N, T, 3, sH, sW) module: symmetric context of ``overlap`` frames."""

    def __init__(self, model: nn.Module, overlap: int):
        self.model = model
        self.overlap = overlap

    def reset(self):
        pass

    def state(self):
        return None

    def load_state(self, st, device, dtype):
        pass

    def left_context(self) -> int:
        return self.overlap

    def process(self, x: torch.Tensor, s: int, n_emit: int, left: int = 0) -> Iterator[Tuple[int, torch.Tensor]]:
        y = self.model(x)
        if y.dim() != 5 or y.shape[1] != x.shape[1]:
            raise VsrError(f"model returned shape {tuple(y.shape)} for input {tuple(x.shape)}; expected "
                           "(N, T, 3, sH, sW)")
        for k in range(n_emit):
            yield s + k, y[0, left + k]


# ---------------------------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------------------------
class Engine:
    """Streaming video super-resolution.

    ``model``: a registered name (``vsr_engine.model_names()``) or a built ``nn.Module`` taking (N, T, 3, H, W)
    RGB in [0, 1]. ``weights``: checkpoint path, ``None`` for the official weights (``variant``), ``False``
    for random init (tests). ``device``: default CUDA when available, else CPU. ``dtype``: fp32 (default),
    fp16, bf16. ``window``/``overlap``: see the module docstring. ``mode``: ``auto`` (split for BasicVSR-style
    models, else black box), ``split`` or ``blackbox`` (symmetric context windows, for comparison).
    Extra keyword arguments go to the model.
    """

    def __init__(self, model: Union[str, nn.Module] = "realbasicvsr", weights=None, device=None, dtype=None,
                 window: int = DEFAULT_WINDOW, overlap: int = DEFAULT_OVERLAP, variant: Optional[str] = None,
                 queue_size: int = 8, mode: str = "auto", tile: Optional[int] = None, memory_limit=None,
                 **model_kwargs):
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
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
        if isinstance(model, nn.Module):
            self.model = model
            self.model_name = type(model).__name__.lower()
        else:
            from .models import load_model
            self.model_name = str(model).lower()
            self.model = load_model(self.model_name, weights=weights, variant=variant, **model_kwargs)
        self.variant = variant
        self.model = self.model.eval().to(self.device, self.dtype)
        for p in self.model.parameters():
            p.requires_grad_(False)
        sc = getattr(self.model, "scale", None)
        self.scale = (int(sc) if float(sc).is_integer() else float(sc)) if sc else None
        core, cleaner = _unwrap(self.model)
        if mode not in ("auto", "split", "blackbox"):
            raise VsrInputError(f"unknown mode {mode!r}; choose auto, split or blackbox")
        if mode == "split" and core is None:
            raise VsrInputError(f"{type(self.model).__name__} is not a BasicVSR-style model; it can only run as a "
                                "black box")
        if core is not None and mode != "blackbox":
            self._proc = _SplitBidirectional(core, cleaner)
            self.mode = "split"
        else:
            self._proc = _BlackBox(self.model, overlap)
            self.mode = "blackbox"
        self.last_summary: Optional[RunSummary] = None

    # called with the number of frames done after each committed window (tests use it to interrupt a run)
    _after_window: Optional[Callable[[int], None]] = None

    def __repr__(self):
        return (f"Engine({self.model_name}, device={self.device}, dtype={str(self.dtype).replace('torch.', '')}, "
                f"window={self.window}, overlap={self.overlap}, mode={self.mode})")

    @property
    def weights_path(self) -> Optional[str]:
        return getattr(self.model, "weights_path", None)

    def settings(self) -> dict:
        """What determines the output: a resumed run must match these."""
        return {"model": self.model_name, "variant": self.variant, "weights": self.weights_path,
                "window": self.window, "overlap": self.overlap, "dtype": str(self.dtype).replace("torch.", ""),
                "scale": self.scale, "mode": self.mode}

    def output_size(self, width: int, height: int) -> Tuple[int, int]:
        """(W, H) of the output for a ``width`` x ``height`` input (models may define ``output_size(h, w)``)."""
        f = getattr(self.model, "output_size", None)
        if callable(f):
            oh, ow = f(height, width)
            return int(ow), int(oh)
        return int(width * self.scale), int(height * self.scale)

    # -- public API ----------------------------------------------------------------------------------------
    def run(self, source, sink=None, *, resume: bool = False, force: bool = False, fps=None,
            progress: Optional[Callable[[int, Optional[int], float], None]] = None,
            codec: str = "libx264", crf: Optional[float] = 18, preset: Optional[str] = "medium",
            pix_fmt: Optional[str] = None, options: Optional[dict] = None, copy_streams: bool = True):
        """Upscale ``source`` (video path, image folder, PyAV input container, or iterable of frames).

        Without ``sink``: returns an iterator of output frames (H*s x W*s x 3 uint8 RGB), produced as they are
        ready; ``self.last_summary`` is set when it is exhausted. With ``sink`` (video path, folder path for PNG
        frames, or a callable taking each frame): writes there and returns a :class:`RunSummary`.
        ``progress(done, total_or_None, seconds)`` is called after every frame.
        Encoding options (``codec``, ``crf``, ``preset``, ``pix_fmt``, ``options``) apply to video sinks.
        """
        if sink is None:
            return self._iter(source, fps=fps, progress=progress)
        inputs = [os.fspath(source)] if isinstance(source, (str, os.PathLike)) else []
        sink_obj = open_sink(sink, inputs=inputs, force=force, resume=resume, settings=self.settings(),
                             codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, options=options,
                             copy_streams=copy_streams)
        return self._run_to_sink(source, sink_obj, fps=fps, progress=progress)

    def upscale_frames(self, frames) -> List[np.ndarray]:
        """Convenience: a list of frames in, the list of output frames out."""
        return list(self.run(frames))

    # -- driving -------------------------------------------------------------------------------------------
    def _iter(self, source, fps=None, progress=None) -> Iterator[np.ndarray]:
        summary = RunSummary()
        src = open_source(source, fps=fps, queue_size=self.queue_size)
        out: List[Tuple[np.ndarray, FrameInfo]] = []
        try:
            with _PeakMemory(self.device) as mem:
                t0 = time.perf_counter()
                for item in self._process(src, 0, None, summary, mem, t0, progress):
                    if item[0] == "frame":
                        yield item[1]
                self._finish_summary(summary, src, mem, t0)
        finally:
            src.close()
            self.last_summary = summary

    def _run_to_sink(self, source, sink, fps=None, progress=None) -> RunSummary:
        summary = RunSummary()
        start, carry = sink.resume_point()
        src = None
        try:
            src = open_source(source, start=max(0, start - self._proc.left_context()) if start else 0, fps=fps,
                              queue_size=self.queue_size)
            sink.prepare(src.info)
            with _PeakMemory(self.device) as mem:
                t0 = time.perf_counter()
                opened = False
                for item in self._process(src, start, carry, summary, mem, t0, progress,
                                          want_state=getattr(sink, "resumable", False)):
                    kind = item[0]
                    if kind == "open":
                        sink.open(src.info, *item[1])
                        opened = True
                    elif kind == "frame":
                        sink.write(item[1], item[2])
                    elif kind == "window":
                        sink.commit(item[1], item[2])
                        hook = type(self)._after_window
                        if hook is not None:
                            hook(item[1])
                if not opened:
                    sink.open(src.info, *summary.output_size)
                self._finish_summary(summary, src, mem, t0)
                if summary.frames_out == 0:
                    raise VsrInputError(f"{getattr(src.info, 'path', None) or 'input'}: no frames to upscale"
                                        + (f" after frame {start}" if start else ""))
                summary.output = sink.finish()
                warn = getattr(sink, "copy_warning", None)
                if warn:
                    summary.warnings.append(warn)
        except BaseException as e:
            sink.abort(e)
            raise
        finally:
            if src is not None:
                src.close()
            self.last_summary = summary
        return summary

    def _finish_summary(self, summary: RunSummary, src, mem: _PeakMemory, t0: float):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        mem.__exit__(None, None, None)
        summary.seconds = time.perf_counter() - t0
        summary.fps = summary.frames_computed / summary.seconds if summary.seconds > 0 else 0.0
        summary.peak_memory_bytes = int(mem.peak)
        summary.peak_memory_increase_bytes = int(max(0, mem.peak - mem.start))
        summary.memory_kind = mem.kind
        rep = src.damage_report()
        if rep:
            summary.warnings.append(rep)
            summary.complete = False

    def _process(self, src, start: int, carry: Optional[dict], summary: RunSummary, mem: _PeakMemory, t0: float,
                 progress, want_state: bool = False) -> Iterator[tuple]:
        """Core loop. Yields ("open", (W, H)), ("frame", rgb_u8, FrameInfo) and ("window", frames_done, state)."""
        proc = _memory.Governor(self._proc, device=self.device, dtype=self.dtype, window=self.window,
                                overlap=self.overlap, scale=self.scale, tile=self.tile,
                                memory_limit=self.memory_limit, summary=summary)
        proc.reset()
        W, O = self.window, self.overlap
        left = proc.left_context()
        summary.device, summary.dtype = str(self.device), str(self.dtype).replace("torch.", "")
        summary.window, summary.overlap = W, O
        summary.resumed_from = summary.frames_out = summary.frames_in = start
        if carry is not None:
            proc.load_state(carry, self.device, self.dtype)
        total = getattr(src.info, "frames", None)
        if getattr(src.info, "width", None) and getattr(src.info, "height", None):
            summary.input_size = (src.info.width, src.info.height)
            if self.scale:
                summary.output_size = self.output_size(src.info.width, src.info.height)
        dev, dt = self.device, self.dtype
        buf: List[torch.Tensor] = []          # (3, h, w) frames, absolute indices buf_start ...
        infos: List[FrameInfo] = []
        buf_start = None
        s = start                             # next frame to emit
        size = None
        it = iter(src)
        exhausted = False
        opened = False

        while True:
            # fill up to the window plus lookahead
            while not exhausted and (buf_start is None or buf_start + len(buf) < s + W + O):
                try:
                    rgb, fi = next(it)
                except StopIteration:
                    exhausted = True
                    break
                if size is None:
                    size = (rgb.shape[1], rgb.shape[0])
                    summary.input_size = size
                    W = proc.plan_for(*size)   # memory plan before the first window: window, tiles
                elif (rgb.shape[1], rgb.shape[0]) != size:
                    raise VsrInputError(f"frame {fi.index}: size {rgb.shape[1]}x{rgb.shape[0]} differs from the "
                                        f"first frame's {size[0]}x{size[1]} (resolution changes are not supported)")
                if buf_start is None:
                    buf_start = fi.index
                if not rgb.flags.writeable:
                    rgb = rgb.copy()
                t = torch.from_numpy(rgb).to(dev, non_blocking=True).permute(2, 0, 1).to(dt).div_(255.0)
                buf.append(t)
                infos.append(fi)
                summary.frames_in = max(summary.frames_in, fi.index + 1)
            if buf_start is None:
                return  # empty input
            avail_end = buf_start + len(buf)
            if s >= avail_end:
                return
            # window [s, e) with lookahead up to la_end; when the rest fits in window+overlap, take it all
            if exhausted and avail_end - s <= W + O:
                e = la_end = avail_end
            else:
                e = min(s + W, avail_end)
                la_end = min(e + O, avail_end)
            lo = max(buf_start, s - left) if left else s
            x = torch.stack(buf[lo - buf_start:la_end - buf_start]).unsqueeze(0)
            gen = proc.process(x, s, e - s, left=s - lo)
            del x
            while True:
                with torch.inference_mode():
                    try:
                        i, y = next(gen)
                    except StopIteration:
                        break
                    out_wh = (int(y.shape[-1]), int(y.shape[-2]))
                    rgb = y.float().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
                    del y
                if not opened:
                    summary.output_size = out_wh
                    if self.scale is None:
                        self.scale = out_wh[1] // size[1]
                    yield ("open", summary.output_size)
                    opened = True
                summary.frames_out += 1
                summary.frames_computed += 1
                yield ("frame", rgb, infos[i - buf_start])
                if progress is not None:
                    progress(summary.frames_out, total, time.perf_counter() - t0)
            mem.sample()
            s = e
            yield ("window", s, _cpu_state(proc.state()) if want_state else None)
            # drop frames no longer needed (keep `left` frames of context for black-box models)
            keep_from = max(buf_start, s - left) if left else s
            drop = keep_from - buf_start
            if drop > 0:
                del buf[:drop]
                del infos[:drop]
                buf_start = keep_from
            if exhausted and s >= buf_start + len(buf):
                return


def _cpu_state(st: Optional[dict]) -> Optional[dict]:
    if st is None:
        return None
    # copies (not views: torch.save of a view would store its whole window), fp32 on the CPU
    return {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype, copy=True)
            for k, v in st.items()}
