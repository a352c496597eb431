"""What a run did (:class:`RunSummary`) and how its memory peak is measured (:class:`_PeakMemory`)."""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
from typing import Dict, List, Optional, Tuple

import torch

__all__ = ["RunSummary", "stage_times"]

# pipeline timer keys -> the stage names users see
_STAGES = (("decode", ("decode",)), ("stage", ("stage",)), ("upload", ("upload",)), ("model", ("step",)),
           ("download", ("download",)), ("encode", ("sink",)))


def stage_times(host_s: Dict[str, float], gpu_ms: Optional[Dict[str, float]] = None) -> Dict[str, float]:
    """Busy seconds per stage from the pipeline's timers. On CUDA the model's time is the larger of the driver's
    (launch) time and the GPU compute time measured with events; copies likewise."""
    out = {name: sum(host_s.get(k, 0.0) for k in keys) for name, keys in _STAGES}
    gpu = gpu_ms or {}
    for name, key in (("model", "compute"), ("upload", "h2d"), ("download", "d2h")):
        if key in gpu:
            out[name] = max(out[name], gpu[key] / 1000.0)
    return out


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
    # busy seconds of each pipeline stage (decode, stage, upload, model, download, encode) and the busiest one
    stages: Dict[str, float] = dataclasses.field(default_factory=dict)
    bound_by: str = ""
    plan: str = ""                     # how the model step computed (dtype, fast step, CPU plan)
    scene_cuts: Optional[List[int]] = None  # frames that started a new scene (None: detection off)

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
        if self.bound_by:
            busy = self.stages.get(self.bound_by, 0.0)
            share = f" ({100 * busy / self.seconds:.0f}% busy)" if self.seconds > 0 else ""
            s += f"; bound by {self.bound_by}{share}"
        if self.scene_cuts:
            cuts = ", ".join(map(str, self.scene_cuts[:8])) + (", ..." if len(self.scene_cuts) > 8 else "")
            s += f"; {len(self.scene_cuts)} scene cut(s) at frame {cuts} (state reset there)"
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
        from .host_threads import pin_host_thread
        pin_host_thread()
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
