"""All stages (decode, stage, unstage, encode): the leaf of ``vsr_engine.io`` -- the errors (their message is
the one line the CLI prints), the lazy PyAV import, the shared types (:class:`FrameInfo`, :class:`SourceInfo`,
:class:`FrameRange`, :class:`VideoBytes`) and opening an input. It imports nothing else from ``vsr_engine``."""
from __future__ import annotations

import dataclasses
from fractions import Fraction
import os
from typing import Dict, List, Optional, Union

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv",
              ".nut", ".ogv", ".3gp", ".wmv", ".y4m", ".gif")


# Errors: the message is the one line the CLI prints.
class VsrError(Exception):
    """Base of the engine's user-facing errors; ``str(e)`` is a complete one-line explanation."""


class VsrInputError(VsrError, ValueError):
    """The input cannot be used (missing, empty, not a video, no video stream, bad frames, ...)."""


class VsrOutputError(VsrError):
    """The output cannot be written (exists, is the input, folder missing, codec/container mismatch, ...)."""


def _av():
    try:
        import av  # noqa: F401
        import av.error  # noqa: F401
    except ImportError as e:  # pragma: no cover - av is a dependency
        raise VsrError(f"PyAV is needed for video files (pip install av): {e}") from None
    return av


def _ffmpeg_msg(e: BaseException) -> str:
    msg = getattr(e, "strerror", None) or str(e)
    return str(msg).strip().splitlines()[0] if str(msg).strip() else type(e).__name__


class VideoBytes:
    """A whole video file held in memory (e.g. the LR video inside an STDO bundle): a source for
    ``VideoReader`` / ``open_source``, and a place ``VideoFileSink`` can copy audio from."""

    def __init__(self, data: Union[bytes, bytearray, memoryview], name: str = "in-memory video"):
        self.data = bytes(data)
        self.name = name

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"VideoBytes({self.name!r}, {len(self.data)} bytes)"


def open_input(src):
    """Open a path or :class:`VideoBytes` for reading with PyAV."""
    import io as _io
    av = _av()
    if isinstance(src, VideoBytes):
        return av.open(_io.BytesIO(src.data), "r", metadata_errors="replace")
    return av.open(os.fspath(src), "r", metadata_errors="replace")


def input_name(src) -> str:
    return src.name if isinstance(src, VideoBytes) else os.fspath(src)


# Frame metadata
@dataclasses.dataclass
class FrameInfo:
    """Where one frame sits in time: ``pts``/``duration`` in units of ``time_base`` (None when unknown)."""
    index: int
    pts: Optional[int] = None
    duration: Optional[int] = None
    time_base: Optional[Fraction] = None

    @property
    def time(self) -> Optional[float]:
        return None if self.pts is None or self.time_base is None else float(self.pts * self.time_base)


@dataclasses.dataclass
class FrameRange:
    """Some frames of a video, named by their presentation timestamps (stream time base): the decoder option a
    batch segment reads with (``VideoReader(path, frame_range=...)``). ``pts``: the frames wanted, in presentation
    order. ``seek``: where decoding may start, nearest first: keyframe PTS to seek to (backwards, to a keyframe),
    ``None`` for the start of the file; when a seek lands after ``pts[0]`` the next entry is tried. Every frame
    decoded from ``pts[0]`` on must have exactly the next wanted PTS: a mismatch is an error, never a shift."""
    pts: List[int]
    seek: List[Optional[int]] = dataclasses.field(default_factory=lambda: [None])


@dataclasses.dataclass
class SourceInfo:
    """What a source knows about its frames (fields are None when unknown)."""
    kind: str                                   # "video", "folder", "frames"
    path: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None                # expected frame count (container header / folder size)
    fps: Optional[Fraction] = None              # average frame rate
    time_base: Optional[Fraction] = None
    codec: Optional[str] = None
    pix_fmt: Optional[str] = None
    bit_depth: Optional[int] = None
    matrix: Optional[str] = None                # the YUV->RGB matrix used: bt601 / bt709 / bt2020 / None (RGB)
    color_range: Optional[str] = None           # "limited" / "full" as used for the conversion
    matrix_guessed: bool = False                # the stream had no matrix tag
    tags: Dict[str, int] = dataclasses.field(default_factory=dict)  # colorspace/color_range/primaries/trc (AVCOL_*)
    rotation: int = 0                           # display rotation, degrees counter-clockwise
    duration: Optional[float] = None            # seconds
    start_time: Optional[float] = None
    other_streams: List[str] = dataclasses.field(default_factory=list)  # "#1 audio aac", ...
    data: Optional["VideoBytes"] = dataclasses.field(default=None, repr=False)  # an in-memory source's bytes
    sar: Optional[Fraction] = None              # sample (pixel) aspect ratio when not square (anamorphic input)
    hdr: Dict[str, object] = dataclasses.field(default_factory=dict)  # HDR10 static metadata (decode.hdr_side_data)

    @property
    def has_audio(self) -> bool:
        return any(" audio " in f" {s} " for s in self.other_streams)

    def describe(self) -> str:
        size = f"{self.width}x{self.height}" if self.width else "?x?"
        parts = [f"{size}"]
        if self.frames:
            parts.append(f"{self.frames} frames")
        if self.fps:
            parts.append(f"{float(self.fps):.3f} fps")
        if self.codec:
            parts.append(f"{self.codec} {self.pix_fmt or ''}".strip())
        if self.matrix:
            parts.append(f"{self.matrix}/{self.color_range}" + (" (guessed)" if self.matrix_guessed else ""))
        if self.rotation:
            parts.append(f"rotation {self.rotation}")
        if self.sar:
            parts.append(f"pixel aspect {self.sar.numerator}:{self.sar.denominator} (kept)")
        if self.hdr:
            parts.append("HDR10 metadata (kept)")
        if self.other_streams:
            parts.append("+ " + ", ".join(self.other_streams))
        return ", ".join(parts)
