"""File-level entry points: read an HR video (or frame folder) through the engine's I/O, fit, save."""
from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from typing import List, Optional, Tuple

import numpy as np

from ..imresize import imresize
from ..video import VsrInputError, open_source
from .fit import FitConfig, FitResult, fit


@dataclasses.dataclass
class ClipInfo:
    """Timing of the frames :func:`read_hr` returned, and where their audio can be copied from."""
    fps: Fraction
    time_base: Fraction
    pts: List[int]              # per frame, in time_base units
    has_audio: bool
    source: Optional[str] = None

    @property
    def span(self) -> Tuple[float, float]:
        """(start, end) of the frames in seconds (end = last frame's start + one frame period)."""
        return float(self.pts[0] * self.time_base), float(self.pts[-1] * self.time_base + 1 / self.fps)


def memory_budget() -> int:
    """Half of the memory available now (Linux ``MemAvailable``; 8 GiB when unknown): what fitting may hold."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except OSError:  # pragma: no cover
        pass
    return 8 << 30


# fitting holds the HR frames, their uint8 tensor copy, the LR frames and their decoded copy: ~2.2x the HR bytes
HOLD_FACTOR = 2.2


def read_hr(path, start: int = 0, frames: int = 0, hr_width: int = 0, fps: float = 25.0,
            max_bytes: Optional[int] = None) -> Tuple[List[np.ndarray], ClipInfo]:
    """HR frames [start, start+frames) (frames 0 = all) of a video file or image folder, read with
    ``vsr_engine.video`` (the stream's own colour matrix, timestamps kept; ``fps`` is for folders).
    ``hr_width`` > 0 first resizes them (MATLAB bicubic) to that width (height keeps the aspect ratio, rounded
    to even) -- to fit a big source into a small CPU budget.

    Fitting holds every frame in memory: a clip that would need more than ``max_bytes`` (default
    :func:`memory_budget`) is refused while reading, with the frame count that fits, before memory runs out."""
    budget = memory_budget() if max_bytes is None else int(max_bytes)
    src = open_source(os.fspath(path), start=start, fps=fps)
    hr, pts = [], []
    tb = None
    try:
        for rgb, fi in src:
            if frames and len(hr) >= frames:
                break
            if hr_width and hr_width != rgb.shape[1]:
                h, w = rgb.shape[:2]
                rgb = imresize(rgb, output_shape=(max(2, int(round(h * hr_width / w / 2)) * 2), hr_width))
            if (len(hr) + 1) * rgb.nbytes * HOLD_FACTOR > budget:
                fit_n = int(budget // (rgb.nbytes * HOLD_FACTOR))
                raise VsrInputError(
                    f"{path}: fitting holds every frame in memory, and more than {len(hr)} frames of "
                    f"{rgb.shape[1]}x{rgb.shape[0]} would need over {budget / 2 ** 20:,.0f} MiB"
                    f"{' (half the memory available now)' if max_bytes is None else ''}; fit a part with "
                    f"--start/--frames (at most {fit_n} frames), or a smaller --hr-width")
            hr.append(np.array(rgb))
            tb = tb or fi.time_base
            pts.append(fi.pts if fi.pts is not None else fi.index)
        info = src.info
    finally:
        src.close()
    if not hr:
        raise VsrInputError(f"{path}: no frames in [{start}, {start + frames if frames else 'end'})")
    rate = Fraction(info.fps) if info.fps else Fraction(fps).limit_denominator(1001)
    tb = Fraction(tb or info.time_base or 1 / rate)
    return hr, ClipInfo(rate, tb, pts, info.kind == "video" and info.has_audio, info.path)


def fit_video(path, cfg: Optional[FitConfig] = None, start: int = 0, frames: int = 0, hr_width: int = 0,
              fps: float = 25.0, progress="default") -> FitResult:
    """Read ``path`` (video or frame folder), fit STDO/JSTDO on frames [start, start+frames), return the result
    (``result.bundle.save(path)`` writes the bundle). The audio of a video source that overlaps those frames
    is copied into the LR video."""
    cfg = (cfg or FitConfig()).check()   # before the video is read
    hr, info = read_hr(path, start, frames, hr_width, fps)
    kw = {}
    if progress != "default":
        kw["progress"] = progress
    return fit(hr, cfg, fps=info.fps, time_base=info.time_base, pts=info.pts,
               audio_src=info.source if info.has_audio else None, **kw)
