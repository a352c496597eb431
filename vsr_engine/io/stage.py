"""Stage 2, stage: the source side of the streaming pipeline: decoded frames as they are, for staging into the (pinned) input ring.

:func:`open_staged_source` opens a source like :func:`~vsr_engine.io.decode.open_source`, except that a video's
decoded YUV frames (4:2:0 / 4:2:2 / 4:4:4, 8 or 10 bit, BT.601 / BT.709 / BT.2020) are handed over unconverted:
the engine stages their planes (1.5 B/px for 4:2:0) and converts to RGB on the compute device with the stream's
own matrix and range. Anything else (RGB, gray, other matrices, image folders, frame iterables) is converted on
the host as before and staged as rgb24. :func:`staged_frames` wraps each frame with its reader-side
:class:`FrameInfo` (index, PTS, duration) for the pipeline.
"""
from __future__ import annotations

import os
from typing import Any, Iterator, Optional

from .common import VideoBytes, VsrInputError
from .decode import FolderSource, IterableSource, VideoReader, open_source

__all__ = ["StagedVideoReader", "open_staged_source", "staged_frames", "STAGED_YUV_FORMATS"]

# pixel formats whose planes are staged as they are (vsr_engine.pipeline.FrameLayout knows them)
STAGED_YUV_FORMATS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p",
                                "yuv420p10le", "yuv422p10le", "yuv444p10le"})
_DEVICE_MATRICES = frozenset({"bt601", "bt709", "bt2020"})  # what vsr_engine.colour converts


class StagedVideoReader(VideoReader):
    """A :class:`VideoReader` that yields ``(av.VideoFrame, FrameInfo)`` for YUV frames the device converts,
    ``(rgb uint8, FrameInfo)`` for the rest."""

    def _convert(self, f) -> Any:
        if f.format.name in STAGED_YUV_FORMATS and self.info.matrix in _DEVICE_MATRICES:
            return f
        return super()._convert(f)


def open_staged_source(source, *, start: int = 0, fps=None, queue_size: int = 8, yuv: bool = True,
                       frame_range=None, threads: int = 0):
    """Like ``open_source``; with ``yuv`` a video is read by a :class:`StagedVideoReader` (``threads``: its
    decoder threads, 0 = FFmpeg's automatic count); ``frame_range`` (a
    :class:`~vsr_engine.io.common.FrameRange`): only those frames of a video file (a batch segment)."""
    if frame_range is not None:
        return (StagedVideoReader if yuv else VideoReader)(source, queue_size=queue_size, frame_range=frame_range,
                                                           threads=threads)
    if not yuv or isinstance(source, (VideoReader, FolderSource, IterableSource)):
        return open_source(source, start=start, fps=fps, queue_size=queue_size)
    if isinstance(source, VideoBytes) or (hasattr(source, "demux") and hasattr(source, "streams")):
        return StagedVideoReader(source, start=start, queue_size=queue_size, threads=threads)
    if isinstance(source, (str, bytes, os.PathLike)) and not os.path.isdir(os.fsdecode(source)):
        return StagedVideoReader(os.fsdecode(source), start=start, queue_size=queue_size, threads=threads)
    return open_source(source, start=start, fps=fps, queue_size=queue_size)


def _size(frame) -> tuple:
    if hasattr(frame, "planes") and hasattr(frame, "format"):
        return frame.width, frame.height
    return frame.shape[1], frame.shape[0]


def staged_frames(src) -> Iterator[Any]:
    """``SourceFrame(frame, FrameInfo, matrix, range)`` for each frame of ``src``; a frame whose size differs from
    the first one's ends the stream with a one-line error."""
    from ..pipeline import SourceFrame
    info = getattr(src, "info", None)
    matrix = getattr(info, "matrix", None)
    rng = getattr(info, "color_range", None) if matrix else None
    first: Optional[tuple] = None
    for frame, fi in src:
        wh = _size(frame)
        if first is None:
            first = wh
        elif wh != first:
            raise VsrInputError(f"frame {fi.index}: size {wh[0]}x{wh[1]} differs from the first frame's "
                                f"{first[0]}x{first[1]} (resolution changes are not supported)")
        if hasattr(frame, "planes"):
            yield SourceFrame(frame, fi, matrix, rng)
        else:
            if not frame.flags.writeable or not frame.flags.c_contiguous:
                frame = frame.copy()
            yield SourceFrame(frame, fi)
