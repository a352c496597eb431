"""Private PyAV helpers for STDO: read HR video (or a frame folder), encode the LR video into bytes with the
source's audio, decode the bundled LR video, write the upscaled output with audio copied and timestamps kept.

TODO(integration): switch to ``vsr_engine.video`` (the shared streaming I/O) once it offers: a frame reader
that yields (RGB uint8, pts, time_base), an in-memory source (bytes), and a writer that copies the audio
packets of a source and keeps frame PTS / time base.
"""
from __future__ import annotations

import dataclasses
import io
import os
from fractions import Fraction
from typing import Iterator, List, Optional, Tuple, Union

import av
import numpy as np

Source = Union[str, os.PathLike, bytes]


@dataclasses.dataclass
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    pts: List[int]            # per frame, in time_base units
    has_audio: bool
    source: Optional[str] = None


def _open(src: Source):
    return av.open(io.BytesIO(src) if isinstance(src, (bytes, bytearray, memoryview)) else os.fspath(src))


def read_frames(path: Union[str, os.PathLike], start: int = 0, count: int = 0, fps: float = 25.0
                ) -> Tuple[List[np.ndarray], VideoInfo]:
    """RGB uint8 frames [start, start+count) (count 0 = all) of a video file or a folder of images."""
    path = os.fspath(path)
    if os.path.isdir(path):
        from ..data import list_images, read_rgb
        files = list_images(path)
        files = files[start:start + count] if count else files[start:]
        frames = [read_rgb(f) for f in files]
        rate = Fraction(fps).limit_denominator(1001)
        tb = 1 / rate
        h, w = frames[0].shape[:2]
        return frames, VideoInfo(w, h, rate, tb, list(range(len(frames))), False, path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such video: {path}")
    frames, pts = [], []
    with av.open(path) as c:
        if not c.streams.video:
            raise ValueError(f"{path}: no video stream")
        vs = c.streams.video[0]
        has_audio = bool(c.streams.audio)
        for i, f in enumerate(c.decode(vs)):
            if i < start:
                continue
            if count and len(frames) >= count:
                break
            frames.append(f.to_ndarray(format="rgb24"))
            pts.append(int(f.pts) if f.pts is not None else i)
        rate = vs.average_rate or Fraction(fps).limit_denominator(1001)
        tb = vs.time_base or 1 / rate
    if not frames:
        raise ValueError(f"{path}: no frames in [{start}, {start + count})")
    h, w = frames[0].shape[:2]
    return frames, VideoInfo(w, h, Fraction(rate), Fraction(tb), pts, has_audio, path)


class _AudioCopy:
    """The first audio stream of ``src``, copied packet by packet (no re-encoding) into ``out``, interleaved
    with the video by time; packets that start at or after the end of the video are dropped."""

    def __init__(self, out, src: Source, t_start: float = 0.0):
        self.t_start = float(t_start)
        self.src = _open(src)
        self.a_in = self.src.streams.audio[0]
        self.a_out = out.add_stream_from_template(self.a_in)
        self.out = out
        self._it = self.src.demux(self.a_in)
        self._pending = None
        self._done = False

    def mux_until(self, t: Optional[float]):
        """Mux packets starting before ``t`` seconds (all remaining when None)."""
        while not self._done:
            pkt = self._pending or next(self._it, None)
            self._pending = None
            if pkt is None:
                self._done = True
                break
            if pkt.dts is None:
                continue
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            if t is not None and float(ts * self.a_in.time_base) >= t:
                self._pending = pkt
                break
            if self.t_start > 0:   # drop packets that end before the first video frame
                end = ts + (pkt.duration or 0)
                if float(end * self.a_in.time_base) <= self.t_start:
                    continue
            pkt.stream = self.a_out
            self.out.mux(pkt)

    def close(self):
        self.src.close()


def _has_audio(src: Optional[Source]) -> bool:
    if src is None:
        return False
    with _open(src) as c:
        return bool(c.streams.audio)


class VideoWriter:
    """Encode RGB uint8 frames with given PTS (in ``time_base``) to ``dst`` (path or None = in-memory bytes),
    copying the audio of ``audio_src`` (path or container bytes) up to the end of the last frame."""

    def __init__(self, dst: Optional[Union[str, os.PathLike]], width: int, height: int, fps: Fraction,
                 time_base: Fraction, codec: str = "libx264", crf: Optional[int] = 18, pix_fmt: str = "yuv420p",
                 audio_src: Optional[Source] = None, fmt: Optional[str] = None, options: Optional[dict] = None,
                 audio_t_start: float = 0.0):
        self._buf = io.BytesIO() if dst is None else None
        self.path = None if dst is None else os.fspath(dst)
        if fmt is None and dst is None:
            fmt = "mp4"
        self.out = av.open(self._buf if dst is None else self.path, "w", format=fmt)
        self.vs = self.out.add_stream(codec, rate=Fraction(fps))
        self.vs.width, self.vs.height, self.vs.pix_fmt = width, height, pix_fmt
        self.vs.time_base = Fraction(time_base)
        self.vs.codec_context.time_base = Fraction(time_base)
        if pix_fmt.startswith("yuv"):
            # PyAV converts rgb24 -> YUV with libswscale's default matrix (BT.601, limited range): say so in
            # the stream, so players and other decoders (e.g. an HD stream, which they would assume is BT.709)
            # convert back with the same matrix
            self.vs.codec_context.colorspace = 6      # AVCOL_SPC_SMPTE170M (BT.601)
            self.vs.codec_context.color_range = 1     # AVCOL_RANGE_MPEG (limited)
        opts = dict(options or {})
        if crf is not None and codec.startswith("libx26"):
            opts.setdefault("crf", str(crf))
        self.vs.options = opts
        self.audio = _AudioCopy(self.out, audio_src, audio_t_start) if _has_audio(audio_src) else None
        self.time_base = Fraction(time_base)
        self.fps = Fraction(fps)
        self.last_t: Optional[float] = None

    def write(self, rgb: np.ndarray, pts: int):
        f = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        f.pts, f.time_base = int(pts), self.time_base
        for pkt in self.vs.encode(f):
            self.out.mux(pkt)
        self.last_t = float(pts * self.time_base + 1 / self.fps)  # end of this frame, seconds
        if self.audio is not None:
            self.audio.mux_until(float(pts * self.time_base))

    def close(self) -> Optional[bytes]:
        for pkt in self.vs.encode():
            self.out.mux(pkt)
        if self.audio is not None:
            self.audio.mux_until(self.last_t)
            self.audio.close()
        self.out.close()
        return self._buf.getvalue() if self._buf is not None else None


def decode(src: Source) -> Iterator[Tuple[np.ndarray, int]]:
    """Yield (RGB uint8 frame, pts) of the first video stream of a file or of container bytes."""
    with _open(src) as c:
        vs = c.streams.video[0]
        for i, f in enumerate(c.decode(vs)):
            yield f.to_ndarray(format="rgb24"), (int(f.pts) if f.pts is not None else i)


def probe(src: Source) -> VideoInfo:
    with _open(src) as c:
        vs = c.streams.video[0]
        pts = [int(p.pts) for p in c.demux(vs) if p.pts is not None]
        return VideoInfo(vs.codec_context.width, vs.codec_context.height, Fraction(vs.average_rate or 25),
                         Fraction(vs.time_base), sorted(pts), bool(c.streams.audio))
