"""Scene cuts on the low-resolution frames: cheap, on the device, tunable.

A frame ``i`` starts a new scene when, against frame ``i - 1``, both

* the luma histogram distance (half the L1 distance of two 32-bin histograms, 0 = same, 1 = disjoint) is at least
  ``threshold``, and
* the mean absolute luma difference (SAD per pixel, 0..1) is at least ``sad``

(the histogram alone misses a cut between two scenes of the same brightness only rarely; the SAD keeps a fade or a
flash of constant content from counting). Both are measured on a subsampled grid (at most about 96 x 96 points), so a
frame costs a few microseconds on a GPU and well under a millisecond on a CPU.

The Engine treats every cut as a clip boundary: recurrent models reset their state there and no window, lookahead or
context crosses it, so the frames after a cut come out exactly as if the second part were a clip of its own
(``tests/test_scenecut.py``).
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from .io.common import VsrInputError

__all__ = ["SceneCutDetector", "DEFAULT_THRESHOLD", "DEFAULT_SAD", "parse_scene_cuts", "scores", "detect",
           "detect_in_video"]

DEFAULT_THRESHOLD = 0.2    # histogram distance; chosen on real clips (docs/scene_cuts.md)
DEFAULT_SAD = 0.1          # mean |dY|
BINS = 32
_GRID = 96


def parse_scene_cuts(value) -> Optional[float]:
    """``--scene-cuts`` value: ``off`` -> None, ``on`` / ``auto`` -> the default threshold, a number in (0, 1] -> that
    histogram threshold."""
    if value is None or value is False:
        return None
    if value is True:
        return DEFAULT_THRESHOLD
    v = str(value).strip().lower()
    if v in ("off", "no", "none", "0", "false"):
        return None
    if v in ("on", "auto", "yes", "true"):
        return DEFAULT_THRESHOLD
    try:
        t = float(v)
    except ValueError:
        raise VsrInputError(f"--scene-cuts: expected off, on or a threshold in (0, 1] (got {value!r})") from None
    if not 0 < t <= 1:
        raise VsrInputError(f"--scene-cuts: the threshold must be in (0, 1] (got {t})")
    return t


def _luma(frame: torch.Tensor) -> torch.Tensor:
    """(3, h, w) RGB in [0, 1] (any float dtype, any device) -> subsampled luma (fp32, flattened)."""
    h, w = frame.shape[-2:]
    sy, sx = max(1, h // _GRID), max(1, w // _GRID)
    f = frame[:, ::sy, ::sx].float()
    return (0.299 * f[0] + 0.587 * f[1] + 0.114 * f[2]).clamp_(0, 1).flatten()


def _stats(frame: torch.Tensor):
    y = _luma(frame)
    hist = torch.histc(y, bins=BINS, min=0.0, max=1.0) / y.numel()
    return y, hist


class SceneCutDetector:
    """Online: ``push(frame)`` for every frame in order returns a 0-d device tensor, 1.0 where that frame starts a
    new scene (never for the first frame). Nothing here waits for the device; the caller brings the flags to the
    host when it needs them (once per window in the Engine)."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, sad: float = DEFAULT_SAD):
        self.threshold, self.sad = float(threshold), float(sad)
        self.prev = None   # (luma, hist) of the last frame pushed

    def reset(self):
        self.prev = None

    def push(self, frame: torch.Tensor) -> torch.Tensor:
        cur = _stats(frame)
        prev, self.prev = self.prev, cur
        if prev is None or prev[0].shape != cur[0].shape:
            return torch.zeros((), device=frame.device)
        hd, sd = _distances(prev, cur)
        return ((hd >= self.threshold) & (sd >= self.sad)).float()

    def state(self) -> Optional[dict]:
        if self.prev is None:
            return None
        return {"scene_prev_luma": self.prev[0], "scene_prev_hist": self.prev[1]}

    def load_state(self, st: dict, device):
        if "scene_prev_luma" in st:
            self.prev = (st["scene_prev_luma"].to(device, torch.float32), st["scene_prev_hist"].to(device, torch.float32))


def _distances(a, b):
    return 0.5 * (a[1] - b[1]).abs().sum(), (a[0] - b[0]).abs().mean()


def scores(frames) -> List[tuple]:
    """(histogram distance, SAD) of every frame against the one before (the first: (0, 0)); frames are (3, h, w)
    RGB tensors in [0, 1] or (h, w, 3) uint8 arrays. For tuning ``threshold`` / ``sad``."""
    out, prev = [], None
    for f in frames:
        t = f if isinstance(f, torch.Tensor) else torch.from_numpy(np.array(f)).permute(2, 0, 1).float() / 255
        cur = _stats(t)
        out.append((0.0, 0.0) if prev is None else tuple(float(v) for v in _distances(prev, cur)))
        prev = cur
    return out


def detect(frames, threshold: float = DEFAULT_THRESHOLD, sad: float = DEFAULT_SAD) -> List[int]:
    """Indices of the frames that start a new scene (as the Engine finds them)."""
    return [i for i, (h, s) in enumerate(scores(frames)) if i and h >= threshold and s >= sad]


def detect_in_video(path: str, threshold=DEFAULT_THRESHOLD, sad: float = DEFAULT_SAD) -> List[int]:
    """Cuts of a video file, decoded at a small size (as the Engine would find them, up to resampling)."""
    import av
    t = parse_scene_cuts(threshold)
    if t is None:
        return []
    with av.open(path) as c:
        st = c.streams.video[0]
        w = min(st.codec_context.width or 192, 192)
        h = max(2, round((st.codec_context.height or w) * w / max(1, st.codec_context.width or w)))
        frames = (f.to_ndarray(format="rgb24", width=w, height=h) for f in c.decode(st))
        return detect(frames, t, sad)
