"""Frame index of a video from its packets alone (demuxed once, nothing decoded).

Every frame of the video stream is one packet; sorting the packets by PTS gives presentation order, so frame
``i`` of the video is the packet with the ``i``-th smallest PTS. The index keeps, per frame, its PTS, its
duration and whether it is a keyframe (a point a decoder can start from), which is all a worker needs to seek
to a keyframe before its range and to know which decoded frames are its own.
"""
from __future__ import annotations

import hashlib
from fractions import Fraction
from typing import List, Optional

from ..io.accounting import shows_picture
from ..io.common import VsrInputError

__all__ = ["FrameIndex", "index_video"]


class FrameIndex:
    """Presentation-ordered ``pts``, ``duration`` and ``key`` lists of one video stream (``time_base`` units)."""

    def __init__(self, pts: List[int], duration: List[int], key: List[bool], time_base: Fraction,
                 stream_index: int = 0):
        self.pts, self.duration, self.key = list(pts), list(duration), list(key)
        self.time_base = Fraction(time_base)
        self.stream_index = int(stream_index)

    def __len__(self) -> int:
        return len(self.pts)

    def keyframe_at_or_before(self, i: int) -> int:
        """Index of the last keyframe at or before frame ``i`` (0 when there is none)."""
        for k in range(min(i, len(self.pts) - 1), -1, -1):
            if self.key[k]:
                return k
        return 0

    def digest(self) -> str:
        h = hashlib.sha256()
        h.update(f"{self.time_base}|{self.stream_index}|".encode())
        for p, d, k in zip(self.pts, self.duration, self.key):
            h.update(f"{p},{d},{int(k)};".encode())
        return h.hexdigest()

    def as_dict(self) -> dict:
        return {"time_base": f"{self.time_base.numerator}/{self.time_base.denominator}",
                "stream_index": self.stream_index, "pts": self.pts, "duration": self.duration,
                "key": [int(k) for k in self.key]}

    @classmethod
    def from_dict(cls, d: dict) -> "FrameIndex":
        return cls(d["pts"], d["duration"], [bool(k) for k in d["key"]], Fraction(d["time_base"]),
                   d.get("stream_index", 0))


def index_video(path: str, fps: Optional[Fraction] = None) -> FrameIndex:
    """Demux the first (non cover-art) video stream of ``path`` and index its frames."""
    import av
    try:
        c = av.open(path)
    except (av.error.FFmpegError, OSError) as e:
        raise VsrInputError(f"{path}: cannot read ({e})") from None
    try:
        vs = None
        for s in c.streams.video:
            if not (int(s.disposition) & 0x400):  # AV_DISPOSITION_ATTACHED_PIC
                vs = s
                break
        if vs is None:
            raise VsrInputError(f"{path}: no video stream")
        tb = Fraction(vs.time_base) if vs.time_base else None
        stream_index = int(vs.index)   # read now: the stream object is not valid after close
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate or fps
        rows = []
        try:
            codec = vs.codec_context.name
            for p in c.demux(vs):
                # as the frame accounting counts frames: no empty packets, none an edit list hides, no hidden
                # VP8/VP9 frames (the decoder gives no picture for them)
                if p.size == 0 or p.is_discard or not shows_picture(codec, p):
                    continue
                if p.pts is None:
                    raise VsrInputError(f"{path}: packets without timestamps (a raw stream); it cannot be split into "
                                        "segments -- use `vsr-engine upscale` for it")
                rows.append((int(p.pts), int(p.duration or 0), bool(p.is_keyframe)))
        except av.error.FFmpegError as e:
            raise VsrInputError(f"{path}: damaged ({e}); use `vsr-engine upscale`, which upscales what decodes") from None
    finally:
        c.close()
    if not rows:
        raise VsrInputError(f"{path}: no video frames")
    if tb is None:
        raise VsrInputError(f"{path}: the video stream has no time base")
    rows.sort(key=lambda r: r[0])
    pts = [r[0] for r in rows]
    if len(set(pts)) != len(pts):
        raise VsrInputError(f"{path}: several frames share a timestamp; it cannot be split into segments")
    default = max(1, int(round(1 / Fraction(rate) / tb))) if rate else 1
    dur = []
    for i, r in enumerate(rows):
        d = r[1]
        if d <= 0:
            d = pts[i + 1] - pts[i] if i + 1 < len(pts) else default
        dur.append(d)
    key = [r[2] for r in rows]
    if not key[0]:
        # the first frame in presentation order is always a valid start for a decoder reading from the beginning
        key[0] = True
    return FrameIndex(pts, dur, key, tb, stream_index)
