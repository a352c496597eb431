"""Stage 1, decode: sources of frames. :class:`VideoReader` decodes any FFmpeg-readable file (a path, an open PyAV
input container, or :class:`VideoBytes`) on a background thread into a bounded queue; every frame keeps its
PTS, duration and time base; damaged input is not fatal (``damage_report()`` says how much was lost).
Image folders (:class:`FolderSource`) and iterables of frames (:class:`IterableSource`) are sources too;
:func:`open_source` picks one."""
from __future__ import annotations

import dataclasses
import os
import queue
import threading
from fractions import Fraction
from typing import Any, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from .accounting import FrameAccount, box_cut, gif_cut, riff_cut, ts_cut
from .structure import structure_damage
from .common import (FrameInfo, FrameRange, IMAGE_EXTS, SourceInfo, VideoBytes, VsrInputError, _av, _ffmpeg_msg,
                     open_input)
from .frames import _AVCOL_SPC, _RANGE, _bit_depth, _is_rgb_format, as_rgb_u8, frame_to_rgb, guess_matrix


# Sources
_END = object()


class _Damage:
    """How much of a damaged input was lost: decoder errors, frames the decoder concealed, an early end."""

    def __init__(self):
        self.decode_errors = 0
        self.corrupt_frames = 0     # frames the decoder output with concealed errors (AV_FRAME_FLAG_CORRUPT)
        self.corrupt_packets = 0    # packets the demuxer marked corrupt (e.g. MPEG-TS continuity errors)
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
    ``frame_range`` (a :class:`FrameRange`) reads only those frames, seeking to a keyframe before them: a batch
    segment with its context; frames are identified by PTS, and any frame missing from the range is an error.
    """

    def __init__(self, source, *, start: int = 0, queue_size: int = 8, threads: int = 0,
                 frame_range: Optional[FrameRange] = None):
        av = _av()
        if frame_range is not None and (start or not frame_range.pts):
            raise ValueError("frame_range needs at least one frame and no start")
        self.range = frame_range
        self._range_hdr: dict = {}
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
                self.container = open_input(source)
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
        # attached pictures (cover art of an audio file) are not video
        videos = [s for s in c.streams.video if not _is_attached_pic(s)]
        if not videos:
            kinds = ", ".join(f"{s.type} {s.codec_context.name if s.codec_context else '?'}"
                              + (" (attached picture)" if s.type == "video" else "") for s in c.streams)
            what = "an audio file with cover art; " if c.streams.video else ""
            listed = "streams: " + kinds if kinds else "no streams at all"
            raise VsrInputError(f"{name}: no video stream ({what}{listed})")
        vs = videos[0]
        if vs.codec_context is None:
            raise VsrInputError(f"{name}: its video stream #{vs.index} has no decoder (an unknown or damaged codec "
                                "header)")
        self._stopped_early = False
        self._next_pts: Optional[int] = None
        self._packets = 0
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
        self._declared_end = _declared_end(vs, tb)
        self._format_name = getattr(getattr(c, "format", None), "name", "") or ""
        self.account = FrameAccount(cc.name, self._format_name, self._header_frames, rate)
        others = []
        for s in c.streams:
            if s.index == vs.index or _is_attached_pic(s):
                continue
            cname = s.codec_context.name if s.codec_context is not None else "?"
            others.append(f"#{s.index} {s.type} {cname}")
        self.info = SourceInfo(
            kind="video", path=self.path, width=cc.width or None, height=cc.height or None,
            frames=frames or None, fps=Fraction(rate) if rate else None, time_base=Fraction(tb) if tb else None,
            codec=cc.name, pix_fmt=fmt.name if fmt is not None else None,
            bit_depth=_bit_depth(fmt) if fmt is not None else None,
            duration=duration, start_time=float(vs.start_time * tb) if (vs.start_time is not None and tb) else None,
            other_streams=others, data=self.data, sar=_sar(vs))
        if self.range is not None:
            self.info.frames = len(self.range.pts)
        self._frames = self._decode_iter() if self.range is None else self._range_iter(name)
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
        info.hdr = hdr_side_data(first) or self._range_hdr

    def _range_iter(self, name: str) -> Iterator[Any]:
        """The frames of ``self.range``: seek, decode, drop the frames before the range, stop after it."""
        av = _av()
        want = self.range.pts
        tried = False
        for key in self.range.seek:
            if tried or key is not None:
                try:
                    if key is None:
                        self.container.seek(0, backward=True, any_frame=False)
                    else:
                        self.container.seek(int(key), stream=self.stream, backward=True, any_frame=False)
                except av.error.FFmpegError as e:
                    raise VsrInputError(f"{name}: cannot seek to PTS {key} ({_ffmpeg_msg(e)})") from None
            tried = True
            k, too_far = 0, False
            frames = self._decode_iter()
            try:
                for f in frames:
                    if not self._range_hdr:
                        self._range_hdr = hdr_side_data(f)    # the keyframe's SEI, when the range starts later
                    if f.pts is None:
                        raise VsrInputError(f"{name}: decoded a frame without a timestamp; it cannot be split")
                    if f.pts < want[0]:
                        continue
                    if k == 0 and f.pts > want[0]:
                        too_far = True      # the seek landed after the first frame wanted: start earlier
                        break
                    if f.pts != want[k]:
                        raise VsrInputError(f"{name}: frame {k} of the range decoded with PTS {f.pts}, expected "
                                            f"{want[k]}")
                    yield f
                    k += 1
                    if k == len(want):
                        return
            finally:
                frames.close()
            if not too_far:
                raise VsrInputError(f"{name}: decoding stopped after {k} of the {len(want)} frames from PTS "
                                    f"{want[0]}")
        raise VsrInputError(f"{name}: the frame at PTS {want[0]} cannot be decoded from any keyframe before it")

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
            if packet.size or packet.pts is not None or packet.dts is not None:   # not the final flush packet
                self._packets += 1
                self.account.packet(packet)
                if packet.is_corrupt:
                    self.damage.corrupt_packets += 1
            try:
                frames = packet.decode()
            except av.error.FFmpegError as e:
                self.damage.note(_ffmpeg_msg(e))
                continue
            for f in frames:
                if f.is_corrupt:
                    self.damage.corrupt_frames += 1
                self.account.frame(f)
                yield f
        # flush what the decoder still holds (after a demux error the final empty packet never came)
        if self.damage.demux_error is not None:
            try:
                for f in vs.codec_context.decode(None):
                    self.account.frame(f)
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
        from ..host_threads import pin_host_thread
        pin_host_thread()  # host thread: no second OpenMP team beside the compute's
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

    def _missing_data(self) -> Optional[Tuple[str, int, bool]]:
        """The video data ends before the end its container declares (a cut file), judged by time: the end of
        the last packet read against the stream's own declared end. Returns (why, frames missing, exact) or None.
        Frame counts are not used (VFR, edit lists and empty repeat frames make estimates wrong); no declared end
        (MPEG-TS, raw streams) means no judgement here."""
        acct = self.account
        end, seen = self._declared_end, acct.last_end
        if end is None or seen is None or end <= 0:
            return None
        period = acct.period()
        # Matroska / MP4 declare the exact end of the last frame: when the last packet carries its own duration,
        # a gap of half the shortest frame is a lost frame; when its duration was estimated from the frame rate,
        # one frame of slack (VFR). AVI counts frame slots, and trailing empty 'repeat' frames hold no data: two
        # frames of slack there
        if "avi" in self._format_name:
            tol = 2 * period + Fraction(1, 50)
        elif acct.last_end_exact:
            tol = period / 2
        else:
            tol = period + Fraction(1, 1000)
        if seen >= end - tol:
            return None
        gap = (end - seen) / period
        n = max(1, int(round(gap)))
        exact = acct.last_end_exact and acct.cfr and abs(gap - n) < Fraction(1, 20)
        return (f"its video data ends at {float(seen):.3f} s of the {float(end):.3f} s its header declares: "
                f"{'' if exact else 'about '}{n} frame(s) missing after {float(seen):.3f} s"), n, exact

    @property
    def damaged(self) -> bool:
        return self.damage_report() is not None

    def damage_report(self, written: Optional[int] = None) -> Optional[str]:
        """One line about lost input, or None. Judged from what was lost only: decoder errors, frames decoded with
        concealed errors, a demuxer error, and the frame accounting (:mod:`~vsr_engine.io.accounting`): packets
        that gave no picture (named by position and time), frames an MP4/MOV index lists that are not in the file,
        video data that ends before the end the container declares, an MPEG-TS file cut inside a packet; and,
        given ``written`` (the frames the run delivered, counting any it resumed from), decoded frames that were
        not written."""
        parts = []
        if self.damage.demux_error:
            parts.append(f"the file ends early ({self.damage.demux_error})")
        if self.damage.decode_errors:
            parts.append(f"{self.damage.decode_errors} damaged packet(s) skipped ({self.damage.first_error})")
        if self.damage.corrupt_packets:
            parts.append(f"{self.damage.corrupt_packets} packet(s) marked corrupt by the demuxer")
        if self.damage.corrupt_frames:
            parts.append(f"{self.damage.corrupt_frames} frame(s) decoded with errors (concealed by the decoder)")
        finished = self._thread is not None and not self._thread.is_alive() and not self._stopped_early
        acct = self.account
        total: Optional[int] = None      # frames the input holds, when that is known
        about = False
        if finished and self.range is not None:
            if written is not None and written < self.decoded:
                parts.append(f"{self.decoded - written} decoded frame(s) were not written (wrote {written} of "
                             f"{self.decoded})")
        elif finished:
            n, pos = acct.swallowed()
            if n:
                parts.append(f"the decoder gave no picture for {n} of the {acct.expected} frame(s) read: "
                             + acct.describe_positions(pos))
                total = acct.expected
            short = acct.index_shortfall()
            if short:
                parts.append(f"its index lists {acct.header_frames} frames and the file holds {acct.packets}: the "
                             f"last {short} are missing (after {float(acct.last_end or 0):.3f} s)")
                total = (total or acct.expected) + short
            elif not self.damage.demux_error or self._declared_end is not None:
                miss = self._missing_data()
                if miss:
                    why, k, exact = miss
                    parts.append(why)
                    total, about = (total or acct.expected) + k, not exact
            where = self.data.data if self.data is not None else self.path
            boxed = ((box_cut(where, self._format_name) if not short else None) or gif_cut(where, self._format_name)
                     or riff_cut(where, self._format_name))
            if boxed:
                after = f" after {float(acct.last_end):.3f} s" if acct.last_end is not None else ""
                parts.append(f"{boxed}; frames{after} may be missing")
            else:
                broken = structure_damage(where, self._format_name, acct.packets - acct.empty)
                if broken:
                    parts.append(f"{broken}; frames may be missing")
            cut = ts_cut(where, self._format_name)
            if cut:
                after = f" after {float(acct.last_end):.3f} s" if acct.last_end is not None else ""
                parts.append(f"{cut}; frames{after} may be missing, and how many cannot be known (MPEG-TS "
                             "declares no length)")
            if written is not None and written < self.decoded:
                parts.append(f"{self.decoded - written} decoded frame(s) were not written (wrote {written} of "
                             f"{self.decoded})")
        if not parts:
            return None
        if total is not None and total > self.decoded:
            count = f"decoded {self.decoded} of {'about ' if about else ''}{total} frames"
        else:
            count = f"decoded {self.decoded} frames"
        return f"input is damaged or truncated: {count}; " + "; ".join(parts)

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


def _is_attached_pic(s) -> bool:
    try:
        return bool(int(s.disposition) & 0x400)     # AV_DISPOSITION_ATTACHED_PIC
    except Exception:  # pragma: no cover
        return False


def _sar(vs) -> Optional[Fraction]:
    """The stream's sample (pixel) aspect ratio when it is not square, else None."""
    for obj in (vs, getattr(vs, "codec_context", None)):
        try:
            r = obj.sample_aspect_ratio if obj is not None else None
        except Exception:  # pragma: no cover
            r = None
        if r:
            r = Fraction(r)
            return None if r == 1 else r
    return None


def _declared_end(vs, tb) -> Optional[Fraction]:
    """Where the container says the video stream ends (seconds): the stream's duration (after its start), or the
    Matroska per-track DURATION tag. None when only estimates exist."""
    if vs.duration and tb:
        start = vs.start_time if (vs.start_time is not None and vs.start_time > 0) else 0
        return (start + vs.duration) * Fraction(tb)
    tag = (vs.metadata or {}).get("DURATION") or (vs.metadata or {}).get("duration")
    if tag:
        try:
            h, m, sec = str(tag).strip().split(":")
            return Fraction(int(h) * 3600 + int(m) * 60) + Fraction(sec)
        except ValueError:
            return None
    return None


_HDR_TYPES = ("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL")


def hdr_side_data(frame) -> dict:
    """HDR10 static metadata of a decoded frame: ``{"mastering": {r, g, b, wp: (x, y), max_lum, min_lum},
    "cll": (MaxCLL, MaxFALL)}`` (keys only for what the frame carries)."""
    import struct
    out = {}
    try:
        items = list(frame.side_data)
    except Exception:  # pragma: no cover
        return out
    for sd in items:
        kind = str(sd.type).rsplit(".", 1)[-1]
        if kind not in _HDR_TYPES:
            continue
        b = bytes(sd)
        if kind == "MASTERING_DISPLAY_METADATA" and len(b) >= 88:
            v = struct.unpack("<22i", b[:88])
            q = [Fraction(v[2 * i], v[2 * i + 1]) if v[2 * i + 1] else Fraction(0) for i in range(10)]
            has_prim, has_lum = v[20], v[21]
            if has_prim and has_lum:
                out["mastering"] = {"r": (q[0], q[1]), "g": (q[2], q[3]), "b": (q[4], q[5]), "wp": (q[6], q[7]),
                                    "min_lum": q[8], "max_lum": q[9]}
        elif kind == "CONTENT_LIGHT_LEVEL" and len(b) >= 8:
            out["cll"] = struct.unpack("<2I", b[:8])
    return out


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

    def damage_report(self, written: Optional[int] = None):
        if written is not None and written < self.decoded:
            return f"{self.decoded - written} frame(s) read were not written (wrote {written} of {self.decoded})"
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

    def damage_report(self, written: Optional[int] = None):
        if written is not None and written < self.decoded:
            return f"{self.decoded - written} frame(s) read were not written (wrote {written} of {self.decoded})"
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
