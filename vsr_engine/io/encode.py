"""Stage 5, encode: :class:`VideoFileSink` encodes output frames (default H.264 / libx264, yuv420p, CRF 18,
preset medium) into one committed segment per engine window inside ``OUTPUT.partial/``, then remuxes the
segments with the source's audio/subtitle streams (packet copy) and renames onto the target only when complete.
PTS and time base (VFR stays VFR), frame rate (declared in the final container too), colour tags, rotation, pixel
aspect ratio, bit depth and HDR10 metadata (mastering display, content light level) are kept. Also the option checks
made before any work (codec, pixel format, stream copy, output size), container-format guessing, and
:func:`open_sink` (a sink from a path, folder, callable or sink object)."""
from __future__ import annotations

import json
import math
import os
import shutil
from fractions import Fraction
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from .common import FrameInfo, SourceInfo, VsrInputError, VsrOutputError, _av, _ffmpeg_msg, open_input
from .frames import _AVRANGE, _TAGS_FOR, _is_rgb_format, rgb_to_frame
from .resume import STATE_VERSION, _abort_partial, _atomic_write, _commit_state, _prepare_partial, check_output_path, discard_file, partial_dir_for, publish_file
from .sinks import CallableSink, FolderSink, Sink


_CRF_CODECS = {"libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1"}


_PRESET_CODECS = {"libx264", "libx264rgb", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc"}


_MP4_FAMILY = {"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"}


# containers offered as a way out when the target cannot hold the input's audio/subtitle streams
_SUGGEST = (("matroska", ".mkv"), ("mp4", ".mp4"), ("mov", ".mov"), ("nut", ".nut"))


def _holds(fmt_name: str, streams) -> Optional[Tuple[object, str]]:
    """None when a ``fmt_name`` container can hold every stream as it is, else (first stream refused, why)."""
    av = _av()
    import io as _io
    c = av.open(_io.BytesIO(), "w", format=fmt_name)
    try:
        for s in streams:
            try:
                c.add_stream_from_template(s)
            except (ValueError, av.error.FFmpegError) as e:
                return s, _ffmpeg_msg(e)
        return None
    finally:
        try:
            c.close()
        except Exception:  # pragma: no cover
            pass


def check_stream_copy(src_path, fmt_name: str, video_codec: Optional[str] = None) -> None:
    """Every audio/subtitle stream of ``src_path`` (a path or :class:`VideoBytes`) must fit a ``fmt_name``
    container as it is (else say so now, naming the output extensions that would hold them all)."""
    av = _av()
    with open_input(src_path) as src:
        streams = _copyable_streams(src)
        bad = _holds(fmt_name, streams)
        if bad is None:
            return
        s, why = bad
        cname = s.codec_context.name if s.codec_context else "?"
        ok = []
        for name, ext in _SUGGEST:
            if name == fmt_name or _holds(name, streams) is not None:
                continue
            if video_codec:
                try:
                    check_video_options("x" + ext, video_codec, "yuv420p", name)
                except VsrOutputError:
                    continue
            ok.append(ext)
        way = (f"use a {' or '.join(ok)} output" if ok else
               "no common container holds all of them as they are; convert that stream first (e.g. subtitles to "
               "SubRip) or write PNG frames to a folder")
        raise VsrOutputError(f"a {fmt_name} file cannot hold the input's {s.type} stream #{s.index} ({cname}) "
                             f"without re-encoding ({why}); {way}") from None


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


def default_pix_fmt(codec: str = "libx264", bit_depth: Optional[int] = None) -> str:
    """The output pixel format when none is given: the input's bit depth kept (10-bit in: ``yuv420p10le``; up to
    8-bit: ``yuv420p``), 4:2:0 for compatibility; the encoder's nearest format when it lacks that one."""
    av = _av()
    want = "yuv420p10le" if (bit_depth or 8) > 8 else "yuv420p"
    try:
        fmts = [f.name for f in (av.Codec(codec, "w").video_formats or [])]
    except Exception:
        return want
    if not fmts or want in fmts:
        return want
    deep = [f for f in fmts if "10" in f or "12" in f or "16" in f] if want != "yuv420p" else []
    for cand in deep + ["yuv420p", "yuv444p", "rgb24"]:
        if cand in fmts:
            return cand
    return fmts[0]


def hdr_encoder_options(codec: str, hdr: dict) -> Tuple[Dict[str, str], Optional[str]]:
    """Encoder options that write the source's HDR10 static metadata (mastering display, content light level)
    into the output bitstream (SEI), and a warning when ``codec`` cannot carry it."""
    if not hdr:
        return {}, None
    m, cll = hdr.get("mastering"), hdr.get("cll")

    def xy(p):
        return f"({int(round(p[0] * 50000))},{int(round(p[1] * 50000))})"

    md = (f"G{xy(m['g'])}B{xy(m['b'])}R{xy(m['r'])}WP{xy(m['wp'])}"
          f"L({int(round(m['max_lum'] * 10000))},{int(round(m['min_lum'] * 10000))})") if m else None
    if codec == "libx264":
        parts = ([f"mastering-display={md}"] if md else []) + ([f"cll={cll[0]},{cll[1]}"] if cll else [])
        return {"x264-params": ":".join(parts)}, None
    if codec == "libx265":
        parts = ["hdr10=1"] + ([f"master-display={md}"] if md else []) + ([f"max-cll={cll[0]},{cll[1]}"] if cll else [])
        return {"x265-params": ":".join(parts)}, None
    return {}, f"the input's HDR10 metadata (mastering display, light level) is not written by encoder {codec}; " \
               "use --codec libx264 or libx265 to keep it"


def check_video_options(path: str, codec: str = "libx264", pix_fmt: Optional[str] = "yuv420p",
                        format: Optional[str] = None) -> str:
    """Check encoder, pixel format and container before any work (no side effects); returns the format name.
    ``pix_fmt`` None: chosen later from the input (:func:`default_pix_fmt`)."""
    av = _av()
    import io as _io
    if pix_fmt is None:
        pix_fmt = default_pix_fmt(codec)
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


class VideoFileSink(Sink):
    """Encode RGB frames to a video file; keeps timing, colour tags and rotation; copies audio/subtitles.

    ``codec`` (default ``libx264``), ``crf`` (18), ``preset`` (``medium``), ``pix_fmt`` (default: the input's
    bit depth kept, ``yuv420p`` or ``yuv420p10le``; see :func:`default_pix_fmt`), ``options`` (extra encoder
    options), ``copy_streams`` (audio/subtitles of
    ``audio_from``, a path or :class:`VideoBytes`, default the source video); ``copy_span`` = (t0, t1) seconds
    copies only the packets that overlap that span (a clip cut from a longer source). ``force`` replaces an
    existing target; ``resume`` continues the partial output of an interrupted run (see the module docstring).
    """
    resumable = True

    def __init__(self, path, *, codec: str = "libx264", crf: Optional[float] = 18, preset: Optional[str] = "medium",
                 pix_fmt: Optional[str] = None, options: Optional[Dict[str, str]] = None, force: bool = False,
                 resume: bool = False, inputs: Sequence[str] = (), copy_streams: bool = True,
                 audio_from=None, format: Optional[str] = None, settings: Optional[dict] = None,
                 faststart: bool = True, copy_span: Optional[Tuple[float, float]] = None):
        self.path = check_output_path(os.fspath(path), inputs=inputs, force=force, resume=resume)
        self.force, self.resume = force, resume
        self.partial = partial_dir_for(self.path)
        self._init_encoder(codec, crf, preset, pix_fmt, options)
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
        self.copy_counts: Dict[int, dict] = {}   # source stream index -> audio/subtitle packets read/written/dropped
        _prepare_partial(self, inputs)

    def _init_encoder(self, codec, crf, preset, pix_fmt, options):
        """The encoder settings and per-run counters (shared with :class:`SegmentSink`)."""
        self.codec, self.crf, self.preset = codec, crf, preset
        self.pix_fmt_given = pix_fmt
        self.pix_fmt = pix_fmt or default_pix_fmt(codec)     # final once the source is known (prepare)
        self.hdr_warning: Optional[str] = None
        self.extra_options = dict(options or {})
        self._start, self._carry = 0, None
        self._seg = None            # (container, stream, tmp path, final name, first index)
        self._seg_frames = 0
        self._info: Optional[SourceInfo] = None
        self._size: Optional[Tuple[int, int]] = None
        self._last_pts: Optional[int] = None
        self._frames_written = 0
        self.loss_warning: Optional[str] = None  # frames the encoder swallowed (see _count_encoded)

    def resume_point(self):
        return self._start, self._carry

    # -- writing -------------------------------------------------------------------------------------------
    def prepare(self, info: SourceInfo):
        """Before any frame is computed: colour tags for the output, and a check that the source's audio and
        subtitle streams fit the target container as they are."""
        self._info = info
        if self.pix_fmt_given is None:
            self.pix_fmt = default_pix_fmt(self.codec, info.bit_depth)
        self._hdr_opts, self.hdr_warning = hdr_encoder_options(self.codec, info.hdr or {})
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
            check_stream_copy(self.audio_from, self.format, self.codec)

    def _time_base(self) -> Fraction:
        info = self._info
        if info is not None and info.time_base:
            return Fraction(info.time_base)
        return Fraction(1, 25) if not (info and info.fps) else 1 / Fraction(info.fps)

    def _open_segment(self, first_index: int, tmp: Optional[str] = None):
        av = _av()
        name = f"seg_{first_index:09d}{self.seg_ext}"
        tmp = tmp or os.path.join(self.partial, name + ".tmp")
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
        sar = info.sar if info is not None else None
        if sar:
            cc.sample_aspect_ratio = Fraction(sar)
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
        for k, v in getattr(self, "_hdr_opts", {}).items():
            opts[k] = v
        for k, v in self.extra_options.items():
            if k in opts and k.endswith("-params") and opts[k]:
                opts[k] = f"{opts[k]}:{v}"          # the user's encoder params after the HDR ones
            else:
                opts[k] = str(v)
        cc.options = opts
        if info is not None and info.rotation:
            try:
                s.set_display_rotation(info.rotation)
            except Exception:  # pragma: no cover
                pass
        self._seg = (c, s, tmp, name, first_index)
        self._seg_frames = 0
        self._seg_packets: List[list] = []                  # [pts, dts, key] of every packet, in mux order
        self._seg_durations: Dict[int, int] = {}            # frame pts -> duration (time base units)
        self._seg_index: Dict[int, int] = {}                # frame pts -> frame index (to name a lost frame)

    def write(self, rgb: np.ndarray, finfo: FrameInfo):
        if self._size is None:
            raise RuntimeError("VideoFileSink.write before open")
        if (rgb.shape[1], rgb.shape[0]) != self._size:
            raise VsrInputError(f"frame {finfo.index}: size {rgb.shape[1]}x{rgb.shape[0]} differs from the first "
                                f"frame's {self._size[0]}x{self._size[1]}")
        self.write_frame(rgb_to_frame(rgb, self.pix_fmt, self.matrix, self.color_range), finfo)

    def write_frame(self, f, finfo: FrameInfo):
        """Encode a PyAV VideoFrame already in ``pix_fmt`` (converted on the device by the engine's pipeline)."""
        if self._size is None:
            raise RuntimeError("VideoFileSink.write_frame before open")
        if (f.width, f.height) != self._size:
            raise VsrInputError(f"frame {finfo.index}: size {f.width}x{f.height} differs from the first "
                                f"frame's {self._size[0]}x{self._size[1]}")
        if self._seg is None:
            self._open_segment(finfo.index)
        c, s, *_ = self._seg
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
        self._seg_index[pts] = finfo.index
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

    def _count_encoded(self):
        """Frames handed to the encoder against the packets it gave for this segment: a frame the encoder
        swallowed is counted and named (``loss_warning``; the run ends incomplete), never passed silently."""
        got = {pt for pt, *_ in self._seg_packets if pt is not None}
        lost = sorted(i for pt, i in self._seg_index.items() if pt not in got)
        n = self._seg_frames - len(self._seg_packets)
        if n <= 0 and not lost:
            return
        self._lost_encoded = getattr(self, "_lost_encoded", []) + (lost or [None] * n)
        named = [i for i in self._lost_encoded if i is not None][:5]
        self.loss_warning = (f"the encoder gave no packet for {len(self._lost_encoded)} frame(s)"
                             + (f": frame #{', #'.join(map(str, named))}" if named else ""))

    def _mux(self, c, p):
        self._seg_packets.append([p.pts, p.dts, bool(p.is_keyframe)])
        c.mux(p)

    def commit(self, frames_done: int, state: Optional[dict] = None):
        """Close the current segment durably and record it with the engine's state (window boundary)."""
        if self._seg is not None:
            c, s, tmp, name, first = self._seg
            for p in s.encode(None):
                self._mux(c, p)
            c.close()
            self._count_encoded()
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            # exact timing of every packet, whatever the segment container rounds (edit lists, ms clocks)
            tb = self._time_base()
            side = {"time_base": f"{tb.numerator}/{tb.denominator}",
                    "packets": [[pt, dt, self._seg_durations.get(pt)] for pt, dt, _ in self._seg_packets]}
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
        if self._seg is not None:
            self.commit(self._state["frames_done"] + self._seg_frames)
        segs = self._state["segments"]
        if not segs:
            raise VsrOutputError("no frames were written")
        tmp = os.path.join(self.partial, "assembled" + os.path.splitext(self.path)[1])
        info = self._info
        copy = remux(tmp, self.format, os.path.join(self.partial, segs[0]["file"]), self._video_packets(segs),
                     time_base=self._time_base(), fps=info.fps if info is not None else None,
                     sar=info.sar if info is not None else None, rotation=info.rotation if info is not None else 0,
                     audio_from=self.audio_from if self.copy_streams else None, copy_span=self.copy_span,
                     faststart=self.faststart)
        self.copy_counts = copy.counts
        if copy.warning:
            self.copy_warning = copy.warning
        if os.path.lexists(self.path) and os.path.isdir(self.path):  # pragma: no cover - checked earlier
            raise VsrOutputError(f"output {self.path} became a folder")
        publish_file(tmp, self.path)
        shutil.rmtree(self.partial, ignore_errors=True)
        return self.path

    def _video_packets(self, segs):
        """The segments' video packets with their recorded timing, in file (decode) order."""
        av = _av()
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


class StreamCopy:
    """The audio/subtitle packets of a source copied into an output: per source stream ``counts`` (read, written,
    dropped), and ``warning`` when a packet was lost (a damaged packet the muxer refused, a copy cut short)."""

    def __init__(self):
        self.counts: Dict[int, dict] = {}
        self.warning: Optional[str] = None

    @property
    def written(self) -> int:
        return sum(c["written"] for c in self.counts.values())

    def packets(self, src, pairs, span: Optional[Tuple[float, float]] = None):
        """``(packet, output stream)`` of every audio/subtitle packet of ``src``, in file order: each source
        packet exactly once (all of them, or those overlapping ``span`` seconds)."""
        av = _av()
        m = {s.index: o for s, o in pairs}
        for s, _ in pairs:
            self.counts[s.index] = {"read": 0, "written": 0, "dropped": 0}
        refused = self.warning
        if not pairs:
            return
        try:
            for p in src.demux([s for s, _ in pairs]):
                if p.dts is None and p.pts is None:
                    continue
                o = m.get(p.stream.index)
                if o is None:
                    continue
                self.counts[p.stream.index]["read"] += 1
                if span is not None and p.time_base:
                    t = p.pts if p.pts is not None else p.dts
                    t0 = float(t * p.time_base)
                    if t0 >= span[1] or t0 + float((p.duration or 0) * p.time_base) <= span[0]:
                        continue
                yield p, o
        except av.error.FFmpegError as e:
            self.warning = "; ".join(w for w in (refused, f"copying audio/subtitles stopped early ({_ffmpeg_msg(e)})")
                                     if w)


def _header_refused(fmt: str, st, probe: str) -> Optional[str]:
    """Why a ``fmt`` muxer refuses to write a header for stream ``st`` as it is (None: it does not); tried in the
    file ``probe`` (removed after; a real file: some muxers check more there than in memory)."""
    av = _av()
    cc = st.codec_context
    if fmt in ("matroska", "webm") and cc is not None and cc.name == "aac" and not cc.extradata:
        return "AAC without its decoder configuration (extradata), which Matroska needs"   # refused per packet
    c = av.open(probe, "w", format=fmt)
    try:
        c.add_stream_from_template(st)
        c.start_encoding()
        return None
    except (ValueError, av.error.FFmpegError) as e:
        msg = _ffmpeg_msg(e)
        return msg.split("last error log: ")[-1] if "last error log: " in msg else msg
    finally:
        try:
            c.close()
        except Exception:  # pragma: no cover
            pass
        try:
            os.remove(probe)
        except OSError:
            pass


def remux(tmp: str, fmt: str, template: str, video_packets, *, time_base: Fraction, fps=None, sar=None,
          rotation: int = 0, audio_from=None, copy_span: Optional[Tuple[float, float]] = None,
          faststart: bool = True) -> StreamCopy:
    """Write ``tmp`` (container ``fmt``): the video stream of the ``template`` segment file with ``video_packets``
    (timed packets, decode order) interleaved by decode time with every audio/subtitle packet of ``audio_from``
    (a path or :class:`VideoBytes`; packet copy). The frame rate, pixel aspect ratio and rotation are written into
    the container. The final step of ``vsr-engine upscale`` (:class:`VideoFileSink`) and of a batch job's merge."""
    av = _av()
    import heapq
    src = out = first = None
    copy = StreamCopy()
    try:
        copied = []
        if audio_from:
            src = open_input(audio_from)
            copied = []
            for st in _copyable_streams(src):
                why = _header_refused(fmt, st, tmp + ".probe")
                if why is None:
                    copied.append(st)
                else:   # damaged stream parameters (e.g. 0 channels): the stream is left out, and said so
                    copy.counts[st.index] = {"read": 0, "written": 0, "dropped": 0, "refused": why}
                    copy.warning = (f"copying audio/subtitles: stream #{st.index} left out, the muxer refuses its "
                                    f"damaged parameters ({why})")
        opts = {}
        if fmt in _MP4_FAMILY:
            if faststart:
                opts["movflags"] = "+faststart"
            # edit lists (start offsets, audio priming) in a clock that holds every stream's ticks exactly,
            # instead of the default milliseconds
            den = Fraction(time_base).denominator
            for st in copied:
                if st.time_base:
                    den = den * st.time_base.denominator // math.gcd(den, st.time_base.denominator)
            if den <= 2 ** 31 - 1:
                opts["movie_timescale"] = str(den)
        def add_video(out, tmpl):
            ov = out.add_stream_from_template(tmpl.streams.video[0])
            # the real frame rate (a template demuxed from a Matroska segment carries its 1 ms clock as the rate)
            # and the pixel aspect ratio, written into the final container
            if fps:
                ov.codec_context.framerate = Fraction(fps)
            if sar:
                ov.codec_context.sample_aspect_ratio = Fraction(sar)
            if rotation:
                ov.set_display_rotation(rotation)
            return ov

        out = av.open(tmp, "w", format=fmt, container_options=opts)
        first = av.open(template)
        ov = add_video(out, first)
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
        try:
            out.start_encoding()      # the header, before any packet is read
        except av.error.FFmpegError as e:
            if not pairs:
                raise
            # a damaged stream the muxer refuses only next to the others: the video alone, and said so
            out.close()
            os.remove(tmp)
            out = av.open(tmp, "w", format=fmt, container_options=opts)
            with av.open(template) as t:
                ov = add_video(out, t)
            why = _ffmpeg_msg(e)
            why = why.split("last error log: ")[-1] if "last error log: " in why else why
            for st, _ in pairs:
                copy.counts[st.index] = {"read": 0, "written": 0, "dropped": 0, "refused": why}
            copy.warning = (f"copying audio/subtitles: streams #{', #'.join(str(st.index) for st, _ in pairs)} "
                            f"left out, the muxer refuses their damaged parameters ({why})")
            pairs = []
            out.start_encoding()

        def key(p):
            t = p.dts if p.dts is not None else p.pts
            return float(t * p.time_base) if (t is not None and p.time_base) else 0.0

        streams = [(("v", p) for p in video_packets), (("c", q) for q in copy.packets(src, pairs, copy_span))]
        heap = []
        for n, it in enumerate(streams):
            for item in it:
                heapq.heappush(heap, (key(item[1] if item[0] == "v" else item[1][0]), n, item, it))
                break
        dropped = 0
        while heap:
            _, n, item, it = heapq.heappop(heap)
            kind, obj = item
            if kind == "v":
                obj.stream = ov
                out.mux(obj)
            else:
                p, o = obj
                cnt = copy.counts[p.stream.index]
                try:
                    p.stream = o
                    out.mux(p)
                    cnt["written"] += 1
                except av.error.FFmpegError as e:
                    # a damaged input's audio/subtitle packet the muxer refuses (bad timestamps): dropped, counted
                    dropped += 1
                    cnt["dropped"] += 1
                    copy.warning = (f"copying audio/subtitles: {dropped} damaged packet(s) of the input "
                                    f"dropped ({_ffmpeg_msg(e)})")
            for nxt in it:
                heapq.heappush(heap, (key(nxt[1] if nxt[0] == "v" else nxt[1][0]), n, nxt, it))
                break
        out.close()
        out = None
    except BaseException:
        discard_file(out, tmp)
        raise
    finally:
        for c in (src, first):
            if c is not None:
                c.close()
    return copy


class SegmentSink(VideoFileSink):
    """Stage 5 for one segment of a batch job (``vsr_engine.distributed``): the encoder of :class:`VideoFileSink`
    (settings, colour tags, SAR, rotation, bit depth, HDR10, frame timing: all from the source's
    :class:`SourceInfo`) writing one file ``path`` in container ``format``, with closed GOPs. Only the frames whose
    PTS are in ``keep`` (the segment's own) are encoded; the context frames around them are dropped. No audio (the
    merge copies the source's audio/subtitle packets once for the whole video), no partial folder: the caller
    verifies the file and renames it. ``finish()`` closes the file and returns its path; :attr:`packets` then holds
    ``[pts, dts, duration, key]`` of every packet in file order (the exact timing, whatever the container rounds).
    """
    resumable = False

    def __init__(self, path, keep: Sequence[int], *, format: str = "mp4", codec: str = "libx264",
                 crf: Optional[float] = 18, preset: Optional[str] = "medium", pix_fmt: Optional[str] = None,
                 options: Optional[Dict[str, str]] = None):
        self.path = os.fspath(path)
        self.partial = os.path.dirname(os.path.abspath(self.path))
        self._init_encoder(codec, crf, preset, pix_fmt, options)
        if codec in ("libx264", "libx265"):
            self.extra_options.setdefault("flags", "+cgop")   # a segment never refers to frames outside itself
        self.copy_streams, self.audio_from, self.copy_span, self.faststart = False, None, None, False
        self.format = check_video_options("segment" + (".mp4" if format in _MP4_FAMILY else ".mkv"), codec, pix_fmt,
                                          format)
        self.seg_format, self.seg_ext = self.format, ""
        self.keep = [int(p) for p in keep]
        self._keep = set(self.keep)
        self.settings = {}
        self._state = {"frames_done": 0, "segments": []}
        self.packets: List[list] = []

    def write(self, rgb, finfo: FrameInfo):
        if finfo.pts in self._keep:
            super().write(rgb, finfo)

    def write_frame(self, f, finfo: FrameInfo):
        if finfo.pts in self._keep:
            if self._seg is None:
                self._open_segment(finfo.index, tmp=self.path)
            super().write_frame(f, finfo)

    def commit(self, frames_done: int, state: Optional[dict] = None):
        pass                                              # one file for the whole segment, closed by finish()

    def finish(self) -> str:
        if self._seg is None:
            raise VsrOutputError(f"{os.path.basename(self.path)}: none of the segment's {len(self.keep)} frames arrived")
        c, s, *_ = self._seg
        for p in s.encode(None):
            self._mux(c, p)
        c.close()
        self._seg = None
        self._count_encoded()
        if self._seg_frames != len(self.keep):
            raise VsrOutputError(f"{os.path.basename(self.path)}: {self._seg_frames} of the segment's "
                                 f"{len(self.keep)} frames arrived")
        # packets come out reordered: each gets its own frame's duration
        self.packets = [[pt, dt, self._seg_durations.get(pt), key] for pt, dt, key in self._seg_packets]
        return self.path

    def abort(self, exc=None):
        if self._seg is not None:
            try:
                self._seg[0].close()
            except Exception:
                pass
            self._seg = None
        try:
            os.remove(self.path)
        except OSError:
            pass


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
              settings: Optional[dict] = None, **video_options) -> Sink:
    """A sink object from a video path (by extension), a folder path (PNG frames; an existing folder or a path
    without a video extension), a callable, or an existing sink."""
    if isinstance(sink, Sink):
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
