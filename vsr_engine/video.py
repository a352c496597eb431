"""Streaming video in/out for the engine (PyAV / FFmpeg).

Reading (:class:`VideoReader`, :func:`open_source`)
    Any FFmpeg-readable file (or an open PyAV input container, or a whole file held in memory as
    :class:`VideoBytes`), decoded on a background thread into a bounded
    queue. YUV -> RGB uses the stream's own matrix and range (BT.601 / BT.709 / BT.2020, limited / full), 8- to
    16-bit, grayscale included; untagged streams get FFmpeg's guess (BT.709 from 1280 wide or 577 high, else
    BT.601; limited range). Every frame keeps its PTS, duration and time base. Damaged input is not fatal: what
    decodes is returned and ``reader.damage`` says how much was lost. Image folders (sorted PNG/JPG/...) and any
    iterable of frames (H x W x 3 uint8 RGB arrays or tensors) are sources too.

Writing (:class:`VideoFileSink`, :class:`FolderSink`, :class:`CallableSink`, :func:`open_sink`)
    Default H.264 (libx264), yuv420p, CRF 18, preset medium; codec, CRF, preset and pixel format (10-bit too)
    are options. The output keeps the source's PTS and time base (variable frame rate stays variable), frame
    rate, colour tags and rotation, and copies its audio and subtitle streams packet for packet.

    Crash safety and resume: frames are encoded into one segment file per engine window inside
    ``OUTPUT.partial/`` (next to the target), each segment committed (closed, synced, renamed, recorded in
    ``state.json`` with the engine's recurrent state) when its window completes. The final file is remuxed from
    the segments plus the source's audio/subtitles into the partial folder and renamed onto the target only when
    complete, so the target path never holds a half-written file. After a failure or interrupt the partial folder
    stays; ``resume=True`` continues after its last committed window.

This module imports only numpy at import time; PyAV and torch are imported when needed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import queue
import shutil
import threading
from fractions import Fraction
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["VsrError", "VsrInputError", "VsrOutputError", "FrameInfo", "SourceInfo", "VideoReader",
           "FolderSource", "IterableSource", "open_source", "VideoFileSink", "FolderSink", "CallableSink",
           "open_sink", "frame_to_rgb", "as_rgb_u8", "IMAGE_EXTS", "VIDEO_EXTS", "partial_dir_for",
           "read_video_frames", "VideoBytes"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv",
              ".nut", ".ogv", ".3gp", ".wmv", ".y4m", ".gif")


# ---------------------------------------------------------------------------------------------------------------
# Errors: the message is the one line the CLI prints.
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# Frame metadata
# ---------------------------------------------------------------------------------------------------------------
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
        if self.other_streams:
            parts.append("+ " + ", ".join(self.other_streams))
        return ", ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# Colour: YUV -> RGB with the stream's matrix and range
# ---------------------------------------------------------------------------------------------------------------
# AVColorSpace -> our matrix name; swscale's SWS_CS_* ids
_AVCOL_SPC = {1: "bt709", 4: "fcc", 5: "bt601", 6: "bt601", 7: "smpte240m", 9: "bt2020", 10: "bt2020"}
_SWS_CS = {"bt709": 1, "fcc": 4, "bt601": 5, "smpte240m": 7, "bt2020": 9}
# matrix name -> (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic) to tag an output with
_TAGS_FOR = {"bt709": (1, 1, 1), "bt601": (6, 6, 6), "bt2020": (9, 9, 14), "fcc": (4, 2, 2), "smpte240m": (7, 7, 7)}
_RANGE = {1: "limited", 2: "full"}
_AVRANGE = {"limited": 1, "full": 2}


def guess_matrix(width: int, height: int) -> str:
    """FFmpeg/mpv's guess for an untagged stream: HD (>= 1280 wide or > 576 high) is BT.709, else BT.601."""
    return "bt709" if (width >= 1280 or height > 576) else "bt601"


def _plane_array(frame, i: int, dtype) -> np.ndarray:
    """Plane ``i`` of a frame as an (h, w) array of code values (line padding removed)."""
    p = frame.planes[i]
    item = np.dtype(dtype).itemsize
    a = np.frombuffer(memoryview(p), dtype=np.uint8).reshape(p.height, p.line_size)
    a = a[:, :p.width * item]
    return np.ascontiguousarray(a).view(dtype).reshape(p.height, p.width) if item > 1 else a.copy()


def _frame_from_plane(a: np.ndarray, pix_fmt: str):
    """A one-plane (gray) VideoFrame of ``pix_fmt`` holding the code values ``a`` (h, w)."""
    av = _av()
    h, w = a.shape
    f = av.VideoFrame(w, h, pix_fmt)
    p = f.planes[0]
    buf = np.zeros((h, p.line_size), np.uint8)
    buf[:, :w * a.itemsize] = np.ascontiguousarray(a).view(np.uint8).reshape(h, w * a.itemsize)
    p.update(buf.tobytes())
    return f


def _is_rgb_format(fmt) -> bool:
    name = fmt.name
    return name.startswith(("rgb", "bgr", "argb", "abgr", "gbr", "0rgb", "0bgr", "rgba", "bgra", "pal8"))


def _is_gray_format(fmt) -> bool:
    return fmt.name.startswith(("gray", "ya"))


def _bit_depth(fmt) -> int:
    try:
        return int(max(c.bits for c in fmt.components))
    except Exception:  # pragma: no cover
        return 8


def frame_to_rgb(frame, matrix: Optional[str] = None, color_range: Optional[str] = None) -> np.ndarray:
    """A decoded PyAV VideoFrame -> H x W x 3 uint8 RGB, converting with ``matrix``/``color_range``
    (default: the frame's own tags, guessed when absent)."""
    fmt = frame.format
    if _is_rgb_format(fmt):
        return frame.to_ndarray(format="rgb24")
    if matrix is None:
        matrix = _AVCOL_SPC.get(int(frame.colorspace or 2)) or guess_matrix(frame.width, frame.height)
    if color_range is None:
        color_range = _RANGE.get(int(frame.color_range or 0)) or ("full" if fmt.name.startswith("yuvj") else "limited")
    if _is_gray_format(fmt):
        # swscale treats gray as full range whatever the tag; do the range mapping here.
        bits = _bit_depth(fmt)
        y = _plane_array(frame, 0, np.uint8 if bits <= 8 else np.uint16).astype(np.float32)
        m = float(1 << (bits - 8))
        if color_range == "limited":
            v = (y - 16.0 * m) / (219.0 * m)
        else:
            v = y / float((1 << bits) - 1)
        g = np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2)
    from av.video.reformatter import Interpolation
    flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    out = frame.reformat(format="rgb24", src_colorspace=_SWS_CS.get(matrix, 5),
                         src_color_range=_AVRANGE[color_range], interpolation=flags)
    return out.to_ndarray()


def rgb_to_frame(rgb: np.ndarray, pix_fmt: str, matrix: str, color_range: str):
    """H x W x 3 uint8 RGB -> a PyAV VideoFrame in ``pix_fmt`` with the given matrix and range."""
    av = _av()
    from av.video.reformatter import Interpolation
    f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    fmt = av.VideoFormat(pix_fmt)
    if _is_rgb_format(fmt):
        return f.reformat(format=pix_fmt)
    if _is_gray_format(fmt):
        bits = _bit_depth(fmt)
        y = rgb.astype(np.float32) @ np.array(_KR_KB_Y(matrix), np.float32)
        m = float(1 << (bits - 8))
        code = (16.0 * m + y / 255.0 * 219.0 * m) if color_range == "limited" else y / 255.0 * ((1 << bits) - 1)
        code = np.clip(np.rint(code), 0, (1 << bits) - 1).astype(np.uint8 if bits <= 8 else np.uint16)
        return _frame_from_plane(code, pix_fmt)
    flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
    return f.reformat(format=pix_fmt, dst_colorspace=_SWS_CS.get(matrix, 1), dst_color_range=_AVRANGE[color_range],
                      interpolation=flags)


def _KR_KB_Y(matrix: str) -> Tuple[float, float, float]:
    kr, kb = {"bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593), "smpte240m": (0.212, 0.087)}.get(
        matrix, (0.299, 0.114))
    return kr, 1.0 - kr - kb, kb


def as_rgb_u8(frame: Any, index: int = 0) -> np.ndarray:
    """One user frame -> H x W x 3 uint8 RGB numpy array.

    Accepts numpy arrays or torch tensors: H x W x 3 (or x 4, alpha dropped) or H x W (gray) uint8; float arrays
    in [0, 1]; torch tensors may also be 3 x H x W. Raises :class:`VsrInputError` naming the frame otherwise.
    """
    a = frame
    if not isinstance(a, np.ndarray):
        try:
            import torch
        except ImportError:  # pragma: no cover
            torch = None
        if torch is not None and isinstance(a, torch.Tensor):
            t = a.detach()
            if t.dim() == 3 and t.shape[-1] not in (1, 3, 4) and t.shape[0] in (1, 3, 4):
                t = t.permute(1, 2, 0)
            a = t.cpu().numpy()
        elif hasattr(a, "to_ndarray"):  # a PyAV VideoFrame
            return frame_to_rgb(a)
        else:
            try:
                a = np.asarray(a)
            except Exception:
                a = None
            if a is None or a.dtype == object:
                raise VsrInputError(f"frame {index}: expected an H x W x 3 uint8 RGB array or tensor, "
                                    f"got {type(frame).__name__}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise VsrInputError(f"frame {index}: expected H x W x 3 RGB, got shape {tuple(a.shape)}")
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
            raise VsrInputError(f"frame {index}: contains NaN or infinity")
        return np.clip(np.rint(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.dtype == np.uint16:
        return (a.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        if a.min() < 0 or a.max() > 255:
            raise VsrInputError(f"frame {index}: integer values outside 0..255")
        return a.astype(np.uint8)
    raise VsrInputError(f"frame {index}: unsupported dtype {a.dtype}")


# ---------------------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------------------
_END = object()


class VideoBytes:
    """A whole video file held in memory (e.g. the LR video inside an STDO bundle): a source for
    :class:`VideoReader` / :func:`open_source`, and a place :class:`VideoFileSink` can copy audio from."""

    def __init__(self, data: Union[bytes, bytearray, memoryview], name: str = "in-memory video"):
        self.data = bytes(data)
        self.name = name

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"VideoBytes({self.name!r}, {len(self.data)} bytes)"


def _open_input(src):
    """Open a path or :class:`VideoBytes` for reading with PyAV."""
    import io as _io
    av = _av()
    if isinstance(src, VideoBytes):
        return av.open(_io.BytesIO(src.data), "r", metadata_errors="replace")
    return av.open(os.fspath(src), "r", metadata_errors="replace")


def _input_name(src) -> str:
    return src.name if isinstance(src, VideoBytes) else os.fspath(src)


class _Damage:
    """How much of a damaged input was lost."""

    def __init__(self):
        self.decode_errors = 0
        self.demux_error: Optional[str] = None
        self.first_error: Optional[str] = None

    def note(self, msg: str):
        self.decode_errors += 1
        if self.first_error is None:
            self.first_error = msg


class VideoReader:
    """Decode one video stream of a file (or open PyAV input container) as RGB frames, on a background thread.

    ``start`` skips that many frames (decoded, not converted). ``queue_size`` bounds the frames held between
    the decoder and the consumer. Iterating yields ``(rgb uint8 HxWx3, FrameInfo)`` in presentation order.
    Construction opens and checks the input and decodes its first frame, so errors come before any work.
    """

    def __init__(self, source, *, start: int = 0, queue_size: int = 8, threads: int = 0):
        av = _av()
        self._own = not hasattr(source, "demux")
        self.data = source if isinstance(source, VideoBytes) else None
        self.start = max(0, int(start))
        self.queue_size = max(1, int(queue_size))
        self.decoded = 0            # frames produced by the decoder (including skipped ones)
        self.skipped = 0
        self.damage = _Damage()
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._q: "queue.Queue" = queue.Queue(maxsize=self.queue_size)
        if self._own:
            if self.data is None:
                path = os.fspath(source)
                self.path = path
                _check_input_file(path)
            else:
                path, self.path = source.name, None
                if not len(source):
                    raise VsrInputError(f"{path}: empty (0 bytes)")
            try:
                self.container = _open_input(source)
            except av.error.FFmpegError as e:
                raise VsrInputError(f"{path}: not a video FFmpeg can read ({_ffmpeg_msg(e)}; a damaged or "
                                    "truncated file, or not a video at all)") from None
            except (OSError, UnicodeDecodeError) as e:
                raise VsrInputError(f"{path}: cannot open ({e})") from None
        else:
            self.container = source
            self.path = getattr(source, "name", None)
        try:
            self._setup(threads)
        except BaseException:
            self.close()
            raise

    # -- setup ---------------------------------------------------------------------------------------------
    def _setup(self, threads: int):
        av = _av()
        c = self.container
        name = self.path or (self.data.name if self.data is not None else "input")
        if not c.streams.video:
            kinds = ", ".join(f"{s.type} {s.codec_context.name if s.codec_context else '?'}" for s in c.streams)
            raise VsrInputError(f"{name}: no video stream ({'streams: ' + kinds if kinds else 'no streams at all'})")
        vs = c.streams.video[0]
        self._stopped_early = False
        self._next_pts: Optional[int] = None
        # attached pictures (cover art) are not video
        for s in c.streams.video:
            if not (int(s.disposition) & 0x400):  # AV_DISPOSITION_ATTACHED_PIC
                vs = s
                break
        self.stream = vs
        try:
            vs.thread_type = "AUTO"
            if threads:
                vs.codec_context.thread_count = int(threads)
        except Exception:  # pragma: no cover
            pass
        cc = vs.codec_context
        fmt = cc.format
        tb = vs.time_base
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        frames = int(vs.frames or 0)
        self._header_frames = frames or None
        duration = float(vs.duration * tb) if (vs.duration and tb) else (
            float(c.duration) / 1e6 if c.duration else None)
        if not frames and duration and rate:
            est = int(round(duration * float(rate)))
            frames = est if est > 0 else 0
        others = []
        for s in c.streams:
            if s.index == vs.index:
                continue
            cname = s.codec_context.name if s.codec_context is not None else "?"
            others.append(f"#{s.index} {s.type} {cname}")
        self.info = SourceInfo(
            kind="video", path=self.path, width=cc.width or None, height=cc.height or None,
            frames=frames or None, fps=Fraction(rate) if rate else None, time_base=Fraction(tb) if tb else None,
            codec=cc.name, pix_fmt=fmt.name if fmt is not None else None,
            bit_depth=_bit_depth(fmt) if fmt is not None else None,
            duration=duration, start_time=float(vs.start_time * tb) if (vs.start_time is not None and tb) else None,
            other_streams=others, data=self.data)
        self._frames = self._decode_iter()
        # first frame: learn size, format, colour tags and rotation before anything is written
        first = None
        for f in self._frames:
            first = f
            break
        if first is None:
            why = f" ({self.damage.first_error or self.damage.demux_error})" if (
                self.damage.first_error or self.damage.demux_error) else ""
            raise VsrInputError(f"{name}: no video frame could be decoded{why}")
        self._first = first
        info = self.info
        info.width, info.height = first.width, first.height
        info.pix_fmt = first.format.name
        info.bit_depth = _bit_depth(first.format)
        spc = int(first.colorspace or cc.colorspace or 2)
        rng = int(first.color_range or cc.color_range or 0)
        prim = int(first.color_primaries or cc.color_primaries or 2)
        trc = int(first.color_trc or cc.color_trc or 2)
        info.tags = {"colorspace": spc, "color_range": rng, "color_primaries": prim, "color_trc": trc}
        if _is_rgb_format(first.format):
            info.matrix, info.color_range = None, "full"
        else:
            m = _AVCOL_SPC.get(spc)
            info.matrix_guessed = m is None
            info.matrix = m or guess_matrix(first.width, first.height)
            info.color_range = _RANGE.get(rng) or ("full" if first.format.name.startswith("yuvj") else "limited")
        try:
            info.rotation = int(round(first.rotation or 0))
        except Exception:  # pragma: no cover
            info.rotation = 0

    def _decode_iter(self) -> Iterator[Any]:
        """Decoded frames; damaged packets are skipped and counted; a demux error ends the stream (flushed)."""
        av = _av()
        vs = self.stream
        demux = self.container.demux(vs)
        while True:
            try:
                packet = next(demux)
            except StopIteration:
                break
            except av.error.FFmpegError as e:
                self.damage.demux_error = _ffmpeg_msg(e)
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                self.damage.note(_ffmpeg_msg(e))
                continue
            for f in frames:
                yield f
        # flush what the decoder still holds (after a demux error the final empty packet never came)
        if self.damage.demux_error is not None:
            try:
                for f in vs.codec_context.decode(None):
                    yield f
            except av.error.FFmpegError:  # pragma: no cover
                pass

    # -- iteration -----------------------------------------------------------------------------------------
    def _info_of(self, f, index: int) -> FrameInfo:
        tb = Fraction(f.time_base or self.info.time_base) if (f.time_base or self.info.time_base) else None
        dur = int(f.duration) if getattr(f, "duration", None) else None
        if not dur and tb is not None and self.info.fps:
            dur = max(1, int(round(1 / Fraction(self.info.fps) / tb)))
        pts = f.pts
        if pts is None:
            # no timestamps (raw elementary streams): continue from the previous frame's end
            pts = self._next_pts if self._next_pts is not None else 0
        self._next_pts = pts + dur if dur else None
        return FrameInfo(index=index, pts=pts, duration=dur, time_base=tb)

    def _convert(self, f) -> np.ndarray:
        return frame_to_rgb(f, self.info.matrix, self.info.color_range)

    def _worker(self):
        q = self._q
        try:
            idx = 0
            pending = [self._first]
            self._first = None

            def all_frames():
                yield from pending
                yield from self._frames

            for f in all_frames():
                if self._stop.is_set():
                    return
                self.decoded += 1
                finfo = self._info_of(f, idx)      # for skipped frames too: synthesized timestamps carry on
                if idx < self.start:
                    self.skipped += 1
                    idx += 1
                    continue
                item = (self._convert(f), finfo)
                idx += 1
                while not self._stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
            self._put_end(_END)
        except BaseException as e:  # surfaced in the consumer
            self._put_end(e)

    def _put_end(self, item):
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Tuple[np.ndarray, FrameInfo]]:
        if self._thread is not None:
            raise RuntimeError("a VideoReader can be iterated once")
        self._thread = threading.Thread(target=self._worker, name="vsr-decode", daemon=True)
        self._thread.start()
        try:
            while True:
                item = self._q.get()
                if item is _END:
                    self._thread.join()
                    return
                if isinstance(item, BaseException):
                    self._thread.join()
                    raise item
                yield item
        except GeneratorExit:
            self._stopped_early = True
            raise
        finally:
            self._stop.set()

    @property
    def damaged(self) -> bool:
        return bool(self.damage.decode_errors or self.damage.demux_error)

    def damage_report(self) -> Optional[str]:
        """One line about lost input, or None: decode errors, early end, fewer frames than the header says."""
        exact = self._header_frames
        est = self.info.frames
        parts = []
        if self.damage.demux_error:
            parts.append(f"the file ends early ({self.damage.demux_error})")
        if self.damage.decode_errors:
            parts.append(f"{self.damage.decode_errors} damaged packet(s) skipped ({self.damage.first_error})")
        finished = self._thread is not None and not self._thread.is_alive() and not self._stopped_early
        if finished and exact and self.decoded < exact:
            parts.insert(0, f"decoded {self.decoded} of {exact} frames")
        elif finished and not exact and est and self.decoded < 0.9 * est - 1:
            parts.insert(0, f"decoded {self.decoded} of about {est} frames (by the duration in its header)")
        elif parts:
            parts.insert(0, f"decoded {self.decoded} frames")
        if not parts:
            return None
        return "input is damaged or truncated: " + "; ".join(parts)

    def close(self):
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            # unblock a worker waiting on a full queue
            try:
                while True:
                    self._q.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=5)
        if self._own and getattr(self, "container", None) is not None:
            try:
                self.container.close()
            except Exception:  # pragma: no cover
                pass
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_input_file(path: str) -> None:
    if not os.path.exists(path):
        raise VsrInputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise VsrInputError(f"{path}: is a folder with no images")
    if not os.access(path, os.R_OK):
        raise VsrInputError(f"{path}: not readable (permission denied)")
    if os.path.getsize(path) == 0:
        raise VsrInputError(f"{path}: empty file (0 bytes)")


class FolderSource:
    """Sorted image files (PNG, JPG, ...) of a folder as RGB frames; PTS = index at ``fps`` (default 25)."""

    def __init__(self, folder, *, start: int = 0, fps: Union[float, Fraction, None] = None):
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise VsrInputError(f"{folder}: not a folder")
        files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))
        if not files:
            raise VsrInputError(f"{folder}: no images ({', '.join(IMAGE_EXTS)}) in this folder")
        self.files = files
        self.start = max(0, int(start))
        rate = Fraction(fps if fps is not None else 25).limit_denominator(100000)
        first = self._read(files[0], 0)
        h, w = first.shape[:2]
        self.info = SourceInfo(kind="folder", path=folder, width=w, height=h, frames=len(files), fps=rate,
                               time_base=1 / rate, codec="image", matrix=None, color_range="full",
                               duration=len(files) / float(rate))
        self.decoded = 0
        self.damage = _Damage()

    @staticmethod
    def _read(path: str, i: int) -> np.ndarray:
        from PIL import Image
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                    a = np.asarray(im, dtype=np.float32)
                    a = a / (65535.0 if a.max() > 255 else 255.0)
                    return as_rgb_u8(a, i)
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as e:
            raise VsrInputError(f"{path}: cannot read image ({e})") from None

    def __iter__(self):
        tb = self.info.time_base
        for i in range(self.start, len(self.files)):
            self.decoded = i + 1
            yield self._read(self.files[i], i), FrameInfo(index=i, pts=i, duration=1, time_base=tb)

    def damage_report(self):
        return None

    def close(self):
        pass


class IterableSource:
    """Any iterable of frames (numpy arrays, torch tensors, PyAV frames; or ``(frame, FrameInfo)`` pairs)."""

    def __init__(self, frames: Iterable, *, start: int = 0, fps: Union[float, Fraction, None] = None):
        self.it = iter(frames)
        self.start = max(0, int(start))
        rate = Fraction(fps).limit_denominator(100000) if fps else None
        n = None
        try:
            n = len(frames)  # type: ignore[arg-type]
        except TypeError:
            pass
        self.info = SourceInfo(kind="frames", frames=n, fps=rate, time_base=(1 / rate) if rate else None,
                               matrix=None, color_range="full")
        self.decoded = 0
        self.damage = _Damage()

    def __iter__(self):
        tb = self.info.time_base
        for i, fr in enumerate(self.it):
            self.decoded = i + 1
            if i < self.start:
                continue
            if isinstance(fr, tuple) and len(fr) == 2 and isinstance(fr[1], FrameInfo):
                fr, fi = fr
                fi = dataclasses.replace(fi, index=i)
            else:
                fi = FrameInfo(index=i, pts=i if tb else None, duration=1 if tb else None, time_base=tb)
            yield as_rgb_u8(fr, i), fi

    def damage_report(self):
        return None

    def close(self):
        pass


def open_source(source, *, start: int = 0, fps=None, queue_size: int = 8):
    """A video path, an image folder, a PyAV input container or an iterable of frames -> a source object
    (iterable of ``(rgb, FrameInfo)`` with ``.info``, ``.damage_report()``, ``.close()``)."""
    if isinstance(source, (VideoReader, FolderSource, IterableSource)):
        return source
    if isinstance(source, VideoBytes):
        return VideoReader(source, start=start, queue_size=queue_size)
    if isinstance(source, (str, bytes, os.PathLike)):
        path = os.fsdecode(source)
        if os.path.isdir(path):
            return FolderSource(path, start=start, fps=fps)
        return VideoReader(path, start=start, queue_size=queue_size)
    if hasattr(source, "demux") and hasattr(source, "streams"):
        return VideoReader(source, start=start, queue_size=queue_size)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return IterableSource(list(source), start=start, fps=fps)
    try:
        import torch
        if isinstance(source, torch.Tensor) and source.dim() == 4:
            return IterableSource(list(source.unbind(0)), start=start, fps=fps)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(source, "__iter__"):
        return IterableSource(source, start=start, fps=fps)
    raise VsrInputError(f"cannot use a {type(source).__name__} as a source: give a video path, an image folder, "
                        "a PyAV container or an iterable of frames")


def read_video_frames(path, *, max_frames: int = 0) -> Tuple[List[np.ndarray], List[FrameInfo], SourceInfo]:
    """Convenience: all (or the first ``max_frames``) RGB frames of a video with their timing."""
    frames, infos = [], []
    with VideoReader(path) as r:
        for rgb, fi in r:
            frames.append(rgb)
            infos.append(fi)
            if max_frames and len(frames) >= max_frames:
                break
        return frames, infos, r.info


# ---------------------------------------------------------------------------------------------------------------
# Sinks
# ---------------------------------------------------------------------------------------------------------------
STATE_VERSION = 1
_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"}
_PRESET_CODECS = {"libx264", "libx264rgb", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc"}
_MP4_FAMILY = {"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"}


def partial_dir_for(path: str) -> str:
    """The folder that holds an unfinished output (segments + resume state): ``OUTPUT.partial``."""
    return os.fspath(path) + ".partial"


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - not all filesystems allow it
        pass


def _atomic_write(path: str, data: bytes) -> None:
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:  # pragma: no cover
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output_path(path: str, *, inputs: Sequence[str] = (), force: bool = False, resume: bool = False,
                      is_folder: bool = False) -> str:
    """Refuse an unusable output before any work: its folder must exist and be writable, it must not be an
    input, and an existing output needs ``force``. Returns the absolute path."""
    path = os.fspath(path)
    if not path or path.endswith(os.sep) and not is_folder:
        raise VsrOutputError(f"output {path!r}: give a file name")
    ap = os.path.abspath(path.rstrip(os.sep) if is_folder else path)
    for src in inputs:
        if src is None:
            continue
        s = os.path.abspath(os.fspath(src))
        if _same_file(ap, s) or (os.path.isdir(s) and os.path.commonpath([ap, s]) == s and is_folder):
            raise VsrOutputError(f"output {path} is the input itself; choose another output path")
    parent = os.path.dirname(ap) or "."
    if not os.path.isdir(parent):
        raise VsrOutputError(f"output folder {os.path.dirname(path) or parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VsrOutputError(f"output folder {parent} is not writable")
    if os.path.lexists(ap) and not force:
        what = "folder" if os.path.isdir(ap) else "file"
        if not (is_folder and os.path.isdir(ap) and not os.listdir(ap)):
            raise VsrOutputError(f"output {path} already exists ({what}); pass --force (force=True) to overwrite")
    if os.path.isdir(ap) and not is_folder:
        raise VsrOutputError(f"output {path} is a folder; give a video file name")
    if os.path.lexists(partial_dir_for(ap)) and not (force or resume):
        raise VsrOutputError(f"an unfinished output of an earlier run is in {partial_dir_for(ap)}; pass --resume to "
                             "continue it or --force to start over")
    return ap


class _Sink:
    """Base of the sinks the engine writes to: ``prepare(info)`` (before any work), ``open(info, width, height)``
    (first frame), ``write(rgb, FrameInfo)``,
    ``commit(frames_done, state)`` at each window end, ``finish()`` -> result path, ``abort(exc)``."""
    resumable = False
    path: Optional[str] = None

    def resume_point(self) -> Tuple[int, Optional[dict]]:
        return 0, None

    def prepare(self, info: SourceInfo) -> None:
        pass

    def open(self, info: SourceInfo, width: int, height: int) -> None:
        pass

    def write(self, rgb: np.ndarray, finfo: FrameInfo) -> None:
        raise NotImplementedError

    def commit(self, frames_done: int, state: Optional[dict] = None) -> None:
        pass

    def finish(self) -> Optional[str]:
        return None

    def abort(self, exc: Optional[BaseException] = None) -> None:
        pass


class CallableSink(_Sink):
    """Calls ``fn(rgb)`` (or ``fn(rgb, FrameInfo)`` when ``with_info``) for every output frame, in order."""

    def __init__(self, fn: Callable, with_info: bool = False):
        self.fn = fn
        self.with_info = with_info

    def write(self, rgb, finfo):
        if self.with_info:
            self.fn(rgb, finfo)
        else:
            self.fn(rgb)


class FolderSink(_Sink):
    """PNG files ``00000000.png``, ... (named by frame index) into a folder created for them; written into
    ``FOLDER.partial/`` and renamed to ``FOLDER`` when complete (resumable: committed frames are kept)."""
    resumable = True

    def __init__(self, folder, *, force: bool = False, resume: bool = False, inputs: Sequence[str] = (),
                 settings: Optional[dict] = None, compress_level: int = 1):
        self.path = check_output_path(os.fspath(folder), inputs=inputs, force=force, resume=resume, is_folder=True)
        self.force, self.resume = force, resume
        self.partial = partial_dir_for(self.path)
        self.settings = dict(settings or {})
        self.compress_level = compress_level
        self._state = {"version": STATE_VERSION, "kind": "folder", "settings": self.settings, "frames_done": 0}
        self._start = 0
        self._carry = None
        _prepare_partial(self, inputs)

    def resume_point(self):
        return self._start, self._carry

    def write(self, rgb, finfo):
        from PIL import Image
        tmp = os.path.join(self.partial, f"{finfo.index:08d}.png.tmp")
        Image.fromarray(rgb).save(tmp, format="PNG", compress_level=self.compress_level)
        os.replace(tmp, os.path.join(self.partial, f"{finfo.index:08d}.png"))

    def commit(self, frames_done, state=None):
        _commit_state(self, frames_done, state)

    def finish(self):
        for f in os.listdir(self.partial):
            if not f.endswith(".png"):
                p = os.path.join(self.partial, f)
                (shutil.rmtree if os.path.isdir(p) else os.remove)(p)
        if os.path.lexists(self.path):
            if os.path.isdir(self.path) and not os.path.islink(self.path):
                shutil.rmtree(self.path)
            else:
                os.remove(self.path)
        os.replace(self.partial, self.path)
        return self.path

    def abort(self, exc=None):
        _abort_partial(self)


def _prepare_partial(sink, inputs) -> None:
    """Create (or, with resume, reopen) the partial folder of a resumable sink."""
    p = sink.partial
    state_path = os.path.join(p, "state.json")
    if os.path.isdir(p) and os.path.isfile(state_path) and sink.resume:
        try:
            with open(state_path) as f:
                st = json.load(f)
        except (OSError, ValueError) as e:
            raise VsrOutputError(f"{p}: cannot read the resume state ({e}); pass --force to start over") from None
        if st.get("version") != STATE_VERSION or st.get("kind") != sink._state["kind"]:
            raise VsrOutputError(f"{p} was written by another version or kind of output; pass --force to start over")
        old, new = st.get("settings", {}), sink.settings
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            k = diff[0]
            raise VsrOutputError(f"{p} was made with different settings ({k}: {old.get(k)!r} then, {new.get(k)!r} "
                                 f"now); use the same options to resume, or --force to start over")
        sink._state = st
        sink._start = int(st.get("frames_done", 0))
        carry_file = os.path.join(p, "carry.pt")
        if sink._start and st.get("carry") and os.path.isfile(carry_file):
            import torch
            sink._carry = torch.load(carry_file, map_location="cpu", weights_only=True)
        elif sink._start and st.get("carry"):
            raise VsrOutputError(f"{p}: the resume state is incomplete (carry.pt missing); pass --force to start over")
        _clean_uncommitted(sink)
        return
    if os.path.lexists(p):
        if not (sink.force or sink.resume):
            raise VsrOutputError(f"an unfinished output of an earlier run is in {p}; pass --resume to continue it "
                                 "or --force to start over")
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.remove(p)
    try:
        os.makedirs(p)
    except OSError as e:
        raise VsrOutputError(f"cannot create {p}: {e.strerror or e}") from None
    _atomic_write(state_path, json.dumps(sink._state, indent=1).encode())


def _clean_uncommitted(sink) -> None:
    """Remove files in the partial folder that the state does not account for (work after the last commit)."""
    keep = {"state.json", "carry.pt"}
    done = int(sink._state.get("frames_done", 0))
    if sink._state["kind"] == "video":
        keep |= {s["file"] for s in sink._state.get("segments", [])}
        keep |= {s["file"] + ".json" for s in sink._state.get("segments", [])}
    for f in os.listdir(sink.partial):
        if f in keep:
            continue
        if sink._state["kind"] == "folder" and f.endswith(".png") and f[:-4].isdigit() and int(f[:-4]) < done:
            continue
        p = os.path.join(sink.partial, f)
        (shutil.rmtree if os.path.isdir(p) and not os.path.islink(p) else os.remove)(p)


def _commit_state(sink, frames_done: int, carry: Optional[dict]) -> None:
    p = sink.partial
    if carry is not None:
        import io as _io
        import torch
        buf = _io.BytesIO()
        torch.save({k: (v.detach().to("cpu").contiguous() if hasattr(v, "detach") else v) for k, v in carry.items()},
                   buf)
        _atomic_write(os.path.join(p, "carry.pt"), buf.getvalue())
    sink._state["frames_done"] = int(frames_done)
    sink._state["carry"] = carry is not None
    _atomic_write(os.path.join(p, "state.json"), json.dumps(sink._state, indent=1).encode())


def _abort_partial(sink) -> None:
    """On failure or interrupt: drop uncommitted work; an empty partial folder (nothing committed) goes too."""
    p = sink.partial
    if not os.path.isdir(p):
        return
    try:
        _clean_uncommitted(sink)
        if int(sink._state.get("frames_done", 0)) == 0:
            shutil.rmtree(p, ignore_errors=True)
    except OSError:  # pragma: no cover
        pass


def check_stream_copy(src_path, fmt_name: str) -> None:
    """Every audio/subtitle stream of ``src_path`` (a path or :class:`VideoBytes`) must fit a ``fmt_name``
    container as it is (else say so now)."""
    av = _av()
    import io as _io
    with _open_input(src_path) as src:
        c = av.open(_io.BytesIO(), "w", format=fmt_name)
        try:
            for s in _copyable_streams(src):
                try:
                    c.add_stream_from_template(s)
                except (ValueError, av.error.FFmpegError) as e:
                    cname = s.codec_context.name if s.codec_context else "?"
                    raise VsrOutputError(
                        f"a {fmt_name} file cannot hold the input's {s.type} stream #{s.index} ({cname}) without "
                        f"re-encoding ({_ffmpeg_msg(e)}); use a .mkv output") from None
        finally:
            try:
                c.close()
            except Exception:  # pragma: no cover
                pass


def check_output_size(pix_fmt: str, width: int, height: int) -> None:
    """Chroma-subsampled formats need sizes divisible by the subsampling (4:2:0: both even): say so before any
    work. The factors come from FFmpeg's own description of ``pix_fmt``."""
    comps = _av().VideoFormat(pix_fmt, 16, 16).components
    sub_w = max(16 // max(1, c.width) for c in comps)
    sub_h = max(16 // max(1, c.height) for c in comps)
    bad = [f"{'an even' if k == 2 else f'a multiple of {k} in'} {n}" for n, v, k in
           (("width", width, sub_w), ("height", height, sub_h)) if k > 1 and v % k]
    if bad:
        raise VsrOutputError(f"the output would be {width}x{height}, and pixel format {pix_fmt} needs "
                             f"{' and '.join(bad)}; pick a scale that gives such sizes, use --pix-fmt yuv444p "
                             "(or rgb24 with a codec that takes it), or write PNG frames to a folder")


def check_video_options(path: str, codec: str = "libx264", pix_fmt: str = "yuv420p",
                        format: Optional[str] = None) -> str:
    """Check encoder, pixel format and container before any work (no side effects); returns the format name."""
    av = _av()
    import io as _io
    if format:
        try:
            av.open(_io.BytesIO(), "w", format=format).close()
        except (ValueError, av.error.FFmpegError):
            raise VsrOutputError(f"unknown container format {format!r}") from None
    fmt_name = format or _guess_format(path)
    try:
        codec_obj = av.Codec(codec, "w")
    except Exception:
        raise VsrOutputError(f"unknown or unavailable video encoder {codec!r} (e.g. libx264, libx265, "
                             "libvpx-vp9, libsvtav1, ffv1)") from None
    if codec_obj.type != "video":
        raise VsrOutputError(f"{codec!r} is not a video encoder")
    try:
        av.VideoFormat(pix_fmt)
    except Exception:
        raise VsrOutputError(f"unknown pixel format {pix_fmt!r}") from None
    fmts = [f.name for f in (codec_obj.video_formats or [])]
    if fmts and pix_fmt not in fmts:
        raise VsrOutputError(f"encoder {codec} cannot take pixel format {pix_fmt!r}; it takes: {', '.join(fmts)}")
    try:
        c = av.open(_io.BytesIO(), "w", format=fmt_name)
    except (ValueError, av.error.FFmpegError) as e:
        raise VsrOutputError(f"cannot write {fmt_name} files ({_ffmpeg_msg(e)})") from None
    try:
        try:
            c.add_stream(codec, rate=25)
        except (ValueError, av.error.FFmpegError) as e:
            raise VsrOutputError(f"a {fmt_name} file cannot hold {codec} video ({_ffmpeg_msg(e)}); "
                                 "choose another --codec or output extension") from None
    finally:
        try:
            c.close()
        except Exception:  # pragma: no cover
            pass
    return fmt_name


class VideoFileSink(_Sink):
    """Encode RGB frames to a video file; keeps timing, colour tags and rotation; copies audio/subtitles.

    ``codec`` (default ``libx264``), ``crf`` (18), ``preset`` (``medium``), ``pix_fmt`` (``yuv420p``; e.g.
    ``yuv420p10le`` for 10-bit), ``options`` (extra encoder options), ``copy_streams`` (audio/subtitles of
    ``audio_from``, a path or :class:`VideoBytes`, default the source video); ``copy_span`` = (t0, t1) seconds
    copies only the packets that overlap that span (a clip cut from a longer source). ``force`` replaces an
    existing target; ``resume`` continues the partial output of an interrupted run (see the module docstring).
    """
    resumable = True

    def __init__(self, path, *, codec: str = "libx264", crf: Optional[float] = 18, preset: Optional[str] = "medium",
                 pix_fmt: str = "yuv420p", options: Optional[Dict[str, str]] = None, force: bool = False,
                 resume: bool = False, inputs: Sequence[str] = (), copy_streams: bool = True,
                 audio_from=None, format: Optional[str] = None, settings: Optional[dict] = None,
                 faststart: bool = True, copy_span: Optional[Tuple[float, float]] = None):
        av = _av()
        self.path = check_output_path(os.fspath(path), inputs=inputs, force=force, resume=resume)
        self.force, self.resume = force, resume
        self.partial = partial_dir_for(self.path)
        self.codec, self.crf, self.preset, self.pix_fmt = codec, crf, preset, pix_fmt
        self.extra_options = dict(options or {})
        self.copy_streams = copy_streams
        self.audio_from = audio_from
        self.copy_span = None if copy_span is None else (float(copy_span[0]), float(copy_span[1]))
        self.faststart = faststart
        # container format of the target, and of the segments (same family; matroska for the rest)
        self.format = check_video_options(self.path, codec, pix_fmt, format)
        self.seg_format = "mp4" if self.format in _MP4_FAMILY else "matroska"
        self.seg_ext = ".mp4" if self.seg_format == "mp4" else ".mkv"
        self.settings = {"codec": codec, "crf": crf, "preset": preset, "pix_fmt": pix_fmt, "format": self.format,
                         "options": self.extra_options, **(settings or {})}
        self._state = {"version": STATE_VERSION, "kind": "video", "settings": self.settings, "frames_done": 0,
                       "segments": []}
        self._start, self._carry = 0, None
        self._seg = None            # (container, stream, tmp path, final name, first index)
        self._seg_frames = 0
        self._info: Optional[SourceInfo] = None
        self._size: Optional[Tuple[int, int]] = None
        self._last_pts: Optional[int] = None
        self._frames_written = 0
        _prepare_partial(self, inputs)

    def resume_point(self):
        return self._start, self._carry

    # -- writing -------------------------------------------------------------------------------------------
    def prepare(self, info: SourceInfo):
        """Before any frame is computed: colour tags for the output, and a check that the source's audio and
        subtitle streams fit the target container as they are."""
        self._info = info
        # output colour: the source's matrix/range (tagged explicitly even when the source relied on a guess)
        self.matrix = info.matrix or "bt709"
        self.color_range = info.color_range if (info.matrix and info.color_range) else "limited"
        if _is_rgb_format(_av().VideoFormat(self.pix_fmt)):
            self.color_range = "full"
        spc, prim, trc = _TAGS_FOR.get(self.matrix, (1, 1, 1))
        tags = dict(info.tags or {})
        guessed = info.matrix is not None and info.matrix_guessed
        self.tags = {
            "colorspace": tags["colorspace"] if tags.get("colorspace", 2) not in (2, None) else spc,
            "color_range": _AVRANGE[self.color_range],
            # primaries / transfer: the source's; when the source has none, BT.709 for RGB sources, and
            # unspecified for untagged video (we do not know them and do not convert them)
            "color_primaries": tags["color_primaries"] if tags.get("color_primaries", 2) not in (2, None)
            else (2 if guessed else prim),
            "color_trc": tags["color_trc"] if tags.get("color_trc", 2) not in (2, None) else (2 if guessed else trc),
        }
        if info.kind == "video" and self.copy_streams and self.audio_from is None:
            self.audio_from = info.path if info.path else info.data
        self._check_copy_streams()
        self._prepared = True

    def open(self, info: SourceInfo, width: int, height: int):
        check_output_size(self.pix_fmt, width, height)
        if not getattr(self, "_prepared", False):
            self.prepare(info)
        self._size = (width, height)

    def _check_copy_streams(self):
        if self.copy_streams and self.audio_from:
            check_stream_copy(self.audio_from, self.format)

    def _time_base(self) -> Fraction:
        info = self._info
        if info is not None and info.time_base:
            return Fraction(info.time_base)
        return Fraction(1, 25) if not (info and info.fps) else 1 / Fraction(info.fps)

    def _open_segment(self, first_index: int):
        av = _av()
        name = f"seg_{first_index:09d}{self.seg_ext}"
        tmp = os.path.join(self.partial, name + ".tmp")
        c = av.open(tmp, "w", format=self.seg_format)
        info = self._info
        rate = info.fps if (info and info.fps) else None
        s = c.add_stream(self.codec, rate=rate) if rate else c.add_stream(self.codec)
        s.width, s.height = self._size
        s.pix_fmt = self.pix_fmt
        tb = self._time_base()
        s.time_base = tb
        cc = s.codec_context
        cc.time_base = tb
        if rate:
            cc.framerate = rate
        for k, v in self.tags.items():
            try:
                setattr(cc, k, v)
            except Exception:  # pragma: no cover
                pass
        opts = {}
        if self.crf is not None and self.codec in _CRF_CODECS:
            opts["crf"] = str(self.crf)
            if self.codec in ("libvpx", "libvpx-vp9"):
                opts["b"] = "0"
        if self.preset and self.codec in _PRESET_CODECS:
            opts["preset"] = str(self.preset)
        opts.update({k: str(v) for k, v in self.extra_options.items()})
        cc.options = opts
        if info is not None and info.rotation:
            try:
                s.set_display_rotation(info.rotation)
            except Exception:  # pragma: no cover
                pass
        self._seg = (c, s, tmp, name, first_index)
        self._seg_frames = 0
        self._seg_packets: List[List[Optional[int]]] = []   # [pts, dts] of every packet, in mux order
        self._seg_durations: Dict[int, int] = {}            # frame pts -> duration (time base units)

    def write(self, rgb: np.ndarray, finfo: FrameInfo):
        if self._size is None:
            raise RuntimeError("VideoFileSink.write before open")
        if (rgb.shape[1], rgb.shape[0]) != self._size:
            raise VsrInputError(f"frame {finfo.index}: size {rgb.shape[1]}x{rgb.shape[0]} differs from the first "
                                f"frame's {self._size[0]}x{self._size[1]}")
        if self._seg is None:
            self._open_segment(finfo.index)
        c, s, *_ = self._seg
        f = rgb_to_frame(rgb, self.pix_fmt, self.matrix, self.color_range)
        tb = self._time_base()
        pts = finfo.pts
        if pts is not None and finfo.time_base is not None and Fraction(finfo.time_base) != tb:
            pts = int(round(pts * Fraction(finfo.time_base) / tb))
        if pts is None:  # frames without timestamps (raw streams, plain arrays): index at the frame rate
            rate = Fraction(self._info.fps) if (self._info is not None and self._info.fps) else Fraction(25)
            pts = int(round(Fraction(finfo.index) / rate / tb))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # the encoder needs strictly increasing pts
        self._last_pts = pts
        f.pts = pts
        f.time_base = tb
        dur = finfo.duration
        if dur and finfo.time_base is not None and Fraction(finfo.time_base) != tb:
            dur = max(1, int(round(dur * Fraction(finfo.time_base) / tb)))
        if not dur and self._info is not None and self._info.fps:
            dur = max(1, int(round(1 / Fraction(self._info.fps) / tb)))      # unknown: one frame period
        if dur:
            try:
                f.duration = dur
            except Exception:  # pragma: no cover
                pass
            self._seg_durations[pts] = int(dur)
        for p in s.encode(f):
            self._mux(c, p)
        self._seg_frames += 1
        self._frames_written += 1

    def _mux(self, c, p):
        self._seg_packets.append([p.pts, p.dts])
        c.mux(p)

    def commit(self, frames_done: int, state: Optional[dict] = None):
        """Close the current segment durably and record it with the engine's state (window boundary)."""
        if self._seg is not None:
            c, s, tmp, name, first = self._seg
            for p in s.encode(None):
                self._mux(c, p)
            c.close()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            # exact timing of every packet, whatever the segment container rounds (edit lists, ms clocks)
            tb = self._time_base()
            side = {"time_base": f"{tb.numerator}/{tb.denominator}",
                    "packets": [[pt, dt, self._seg_durations.get(pt)] for pt, dt in self._seg_packets]}
            _atomic_write(os.path.join(self.partial, name + ".json"), json.dumps(side).encode())
            os.replace(tmp, os.path.join(self.partial, name))
            self._state["segments"].append({"file": name, "first": first, "frames": self._seg_frames})
            self._seg = None
        _commit_state(self, frames_done, state)

    def abort(self, exc=None):
        if self._seg is not None:
            c = self._seg[0]
            try:
                c.close()
            except Exception:
                pass
            self._seg = None
        _abort_partial(self)

    # -- final assembly ------------------------------------------------------------------------------------
    def finish(self) -> str:
        """Remux the segments (+ the source's audio/subtitles) into the target, atomically."""
        av = _av()
        if self._seg is not None:
            self.commit(self._state["frames_done"] + self._seg_frames)
        segs = self._state["segments"]
        if not segs:
            raise VsrOutputError("no frames were written")
        tmp = os.path.join(self.partial, "assembled" + os.path.splitext(self.path)[1])
        src = out = first = None
        try:
            copied = []
            if self.copy_streams and self.audio_from:
                src = _open_input(self.audio_from)
                copied = _copyable_streams(src)
            opts = {}
            if self.format in _MP4_FAMILY:
                if self.faststart:
                    opts["movflags"] = "+faststart"
                # edit lists (start offsets, audio priming) in a clock that holds every stream's ticks exactly,
                # instead of the default milliseconds
                den = self._time_base().denominator
                for st in copied:
                    if st.time_base:
                        den = den * st.time_base.denominator // math.gcd(den, st.time_base.denominator)
                if den <= 2 ** 31 - 1:
                    opts["movie_timescale"] = str(den)
            out = av.open(tmp, "w", format=self.format, container_options=opts)
            first = av.open(os.path.join(self.partial, segs[0]["file"]))
            vt = first.streams.video[0]
            ov = out.add_stream_from_template(vt)
            rot = self._info.rotation if self._info is not None else 0
            if rot:
                ov.set_display_rotation(rot)
            pairs = []
            for st in copied:
                o = out.add_stream_from_template(st)
                try:
                    o.metadata.update(st.metadata)
                    o.disposition = st.disposition
                except Exception:  # pragma: no cover
                    pass
                pairs.append((st, o))
            first.close()
            first = None
            self._mux_all(out, ov, segs, src, pairs)
            out.close()
            out = None
        except BaseException:
            if out is not None:
                try:
                    out.close()
                except Exception:
                    pass
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        finally:
            for c in (src, first):
                if c is not None:
                    c.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if os.path.lexists(self.path) and os.path.isdir(self.path):  # pragma: no cover - checked earlier
            raise VsrOutputError(f"output {self.path} became a folder")
        os.replace(tmp, self.path)
        _fsync_dir(os.path.dirname(self.path))
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.path

    def _mux_all(self, out, ov, segs, src, pairs):
        """Interleave video packets from the segments with the copied packets by decode time."""
        av = _av()
        import heapq

        def video_packets():
            last_dts = None
            for seg in segs:
                path = os.path.join(self.partial, seg["file"])
                with open(path + ".json") as fh:
                    side = json.load(fh)
                tb = Fraction(side["time_base"])
                rec = side["packets"]
                k = 0
                with av.open(path) as c:
                    vs = c.streams.video[0]
                    for p in c.demux(vs):
                        if p.size == 0:
                            continue
                        if k >= len(rec):
                            raise VsrOutputError(f"{path} holds more packets than recorded; pass --force to start over")
                        pts, dts, dur = rec[k]
                        k += 1
                        p.time_base = tb
                        p.pts, p.dts = pts, dts
                        if dur:
                            p.duration = dur
                        if dts is not None and last_dts is not None and dts <= last_dts:
                            # segments start with an IDR whose dts can touch the previous segment's last one
                            p.dts = last_dts + 1
                            if p.pts is not None and p.pts < p.dts:
                                p.pts = p.dts
                        last_dts = p.dts if p.dts is not None else last_dts
                        yield p
                if k != len(rec):
                    raise VsrOutputError(f"{path} is damaged ({k} of {len(rec)} packets); pass --force to start over")

        def copied_packets():
            if src is None or not pairs:
                return
            m = {s.index: o for s, o in pairs}
            span = self.copy_span
            try:
                for p in src.demux([s for s, _ in pairs]):
                    if p.dts is None and p.pts is None:
                        continue
                    o = m.get(p.stream.index)
                    if o is None:
                        continue
                    if span is not None and p.time_base:
                        t = p.pts if p.pts is not None else p.dts
                        t0 = float(t * p.time_base)
                        if t0 >= span[1] or t0 + float((p.duration or 0) * p.time_base) <= span[0]:
                            continue
                    yield p, o
            except av.error.FFmpegError as e:
                self.copy_warning = f"copying audio/subtitles stopped early ({_ffmpeg_msg(e)})"

        def key(p):
            t = p.dts if p.dts is not None else p.pts
            return float(t * p.time_base) if (t is not None and p.time_base) else 0.0

        streams = [(("v", p) for p in video_packets()), (("c", q) for q in copied_packets())]
        heap = []
        for n, it in enumerate(streams):
            for item in it:
                heapq.heappush(heap, (key(item[1] if item[0] == "v" else item[1][0]), n, item, it))
                break
        seq = 0
        while heap:
            _, n, item, it = heapq.heappop(heap)
            kind, obj = item
            if kind == "v":
                obj.stream = ov
                out.mux(obj)
            else:
                p, o = obj
                p.stream = o
                out.mux(p)
            seq += 1
            for nxt in it:
                heapq.heappush(heap, (key(nxt[1] if nxt[0] == "v" else nxt[1][0]), n, nxt, it))
                break


def _copyable_streams(src) -> list:
    return [s for s in src.streams if s.type in ("audio", "subtitle")]


def _guess_format(path: str) -> str:
    av = _av()
    ext = os.path.splitext(path)[1].lower()
    known = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi",
             ".ts": "mpegts", ".mts": "mpegts", ".m2ts": "mpegts", ".nut": "nut", ".flv": "flv", ".mpg": "mpeg",
             ".mpeg": "mpeg", ".ogv": "ogg", ".3gp": "3gp", ".y4m": "yuv4mpegpipe", ".gif": "gif"}
    if ext in known:
        return known[ext]
    import io as _io
    try:
        c = av.open(_io.BytesIO(), "w", format=ext.lstrip(".") or None)
        name = c.format.name.split(",")[0]
        c.close()
        return name
    except Exception:
        raise VsrOutputError(f"cannot tell the container format from {os.path.basename(path)!r}; use an extension "
                             "like .mp4 or .mkv (or a folder name for PNG frames)") from None


def open_sink(sink, *, inputs: Sequence[str] = (), force: bool = False, resume: bool = False,
              settings: Optional[dict] = None, **video_options) -> _Sink:
    """A sink object from a video path (by extension), a folder path (PNG frames; an existing folder or a path
    without a video extension), a callable, or an existing sink."""
    if isinstance(sink, _Sink):
        return sink
    if callable(sink):
        return CallableSink(sink)
    if isinstance(sink, (str, os.PathLike)):
        p = os.fspath(sink)
        ext = os.path.splitext(p.rstrip(os.sep))[1].lower()
        is_folder = p.endswith(os.sep) or os.path.isdir(p) or not ext
        if is_folder:
            return FolderSink(p, force=force, resume=resume, inputs=inputs, settings=settings)
        return VideoFileSink(p, force=force, resume=resume, inputs=inputs, settings=settings, **video_options)
    raise VsrOutputError(f"cannot use a {type(sink).__name__} as a sink: give a video path, a folder or a callable")
