"""Segments of one video: half-open frame ranges [start, end) with context frames on each side.

A worker decodes ``[start - left, end + right)`` (clipped to the video), runs the Engine on all of it and keeps
only ``[start, end)``: the left context warms up recurrent state (the forward branch of split-mode models), the
right context gives the backward branch (or a black-box model) its lookahead. Ranges tile the video exactly, so
every frame is emitted by exactly one segment.
"""
from __future__ import annotations

import bisect
import dataclasses
import math
from typing import List, Optional, Sequence

from ..video import VsrInputError

__all__ = ["Segment", "plan_segments", "DEFAULT_SEGMENT_FRAMES"]

DEFAULT_SEGMENT_FRAMES = 300


@dataclasses.dataclass(frozen=True)
class Segment:
    id: int
    start: int          # first frame emitted
    end: int            # one past the last frame emitted
    ctx_start: int      # first frame decoded and run (start - left, clipped)
    ctx_end: int        # one past the last frame run (end + right, clipped)

    @property
    def frames(self) -> int:
        return self.end - self.start

    @property
    def name(self) -> str:
        return f"seg_{self.id:05d}"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_segments(n_frames: int, *, segments: Optional[int] = None, segment_frames: Optional[int] = None,
                  left: int = 8, right: int = 8, cuts: Optional[Sequence[int]] = None) -> List[Segment]:
    """Split ``n_frames`` into ``segments`` near-equal ranges, or ranges of ``segment_frames`` frames (the last
    one takes the remainder; a remainder shorter than half a segment is merged into the one before).

    ``cuts`` (scene cuts: frames that start a new scene): a border moves to the nearest cut within a third of its
    segment, and no context reaches across a cut (the Engine resets there anyway), so a segment starting at a cut
    needs no left context and its frames are exactly those of one run."""
    if n_frames < 1:
        raise VsrInputError("nothing to plan: the video has no frames")
    if segments is not None and segment_frames is not None:
        raise VsrInputError("give --segments or --segment-frames, not both")
    if left < 0 or right < 0:
        raise VsrInputError("context frames must be 0 or more")
    if segments is not None:
        if segments < 1:
            raise VsrInputError(f"--segments must be at least 1 (got {segments})")
        k = min(int(segments), n_frames)
        bounds = [(n_frames * i) // k for i in range(k + 1)]
    else:
        f = DEFAULT_SEGMENT_FRAMES if segment_frames is None else int(segment_frames)
        if f < 1:
            raise VsrInputError(f"--segment-frames must be at least 1 (got {f})")
        k = max(1, math.ceil(n_frames / f))
        bounds = [min(n_frames, i * f) for i in range(k + 1)]
        if k > 1 and bounds[-1] - bounds[-2] < f / 2 and f > 1:
            del bounds[-2]
    cuts = sorted({int(c) for c in (cuts or ()) if 0 < int(c) < n_frames})
    if cuts:
        bounds = _snap(bounds, cuts)
    out = []
    for i in range(len(bounds) - 1):
        s, e = bounds[i], bounds[i + 1]
        lo, hi = max(0, s - left), min(n_frames, e + right)
        if cuts:
            k = bisect.bisect_right(cuts, s)          # scene of frame s starts at cuts[k-1] (or 0)
            lo = max(lo, cuts[k - 1] if k else 0)
            k = bisect.bisect_left(cuts, e)           # the first cut at or after e ends the lookahead
            hi = min(hi, cuts[k] if k < len(cuts) else n_frames)
        out.append(Segment(i, s, e, lo, hi))
    return out


def _snap(bounds: List[int], cuts: List[int]) -> List[int]:
    """Interior borders moved to the nearest cut within a third of the shorter neighbouring segment."""
    b = list(bounds)
    for i in range(1, len(b) - 1):
        reach = min(b[i] - b[i - 1], bounds[i + 1] - b[i]) // 3
        k = bisect.bisect_left(cuts, b[i])
        near = [c for c in cuts[max(0, k - 1):k + 1] if abs(c - b[i]) <= reach and b[i - 1] < c < bounds[i + 1]]
        if near:
            b[i] = min(near, key=lambda c: (abs(c - b[i]), c))
    return b
