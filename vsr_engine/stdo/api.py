"""File-level entry points: read an HR video (or frame folder), fit, save."""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np

from ..imresize import imresize
from . import _video
from .fit import FitConfig, FitResult, fit


def read_hr(path, start: int = 0, frames: int = 0, hr_width: int = 0, fps: float = 25.0
            ) -> Tuple[List[np.ndarray], _video.VideoInfo]:
    """HR frames of a video file or image folder; ``hr_width`` > 0 first resizes them (MATLAB bicubic) to that
    width (height keeps the aspect ratio, rounded to even) -- to fit a big source into a small CPU budget."""
    hr, info = _video.read_frames(path, start=start, count=frames, fps=fps)
    if hr_width and hr_width != hr[0].shape[1]:
        h, w = hr[0].shape[:2]
        nh = max(2, int(round(h * hr_width / w / 2)) * 2)
        hr = [imresize(f, output_shape=(nh, hr_width)) for f in hr]
    return hr, info


def fit_video(path, cfg: Optional[FitConfig] = None, start: int = 0, frames: int = 0, hr_width: int = 0,
              fps: float = 25.0, progress="default") -> FitResult:
    """Read ``path`` (video or frame folder), fit STDO/JSTDO on frames [start, start+frames), return the result
    (``result.bundle.save(path)`` writes the bundle). Audio of a video source is copied into the LR video."""
    cfg = cfg or FitConfig()
    hr, info = read_hr(path, start, frames, hr_width, fps)
    kw = {}
    if progress != "default":
        kw["progress"] = progress
    audio = info.source if info.has_audio else None
    t_start = float(info.pts[0] * info.time_base) if info.pts else 0.0
    return fit(hr, cfg, fps=info.fps, time_base=info.time_base, pts=info.pts, audio_src=audio,
               audio_t_start=t_start, **kw)
