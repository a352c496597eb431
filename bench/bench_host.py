"""Host-side budget of the streaming pipeline at 540p -> 4K: what one CPU core spends per frame on each host
stage, and the cores needed for 30 fps at each libx264 preset.

    python bench/bench_host.py [--frames 10] [--presets ultrafast,superfast,veryfast,faster,fast,medium]
                               [--out bench/results/host_budget]

Stages timed per frame as CPU time of this process (``time.process_time``: what a core spends, not wall time,
which on a shared machine mostly measures waiting), single-threaded (``torch.set_num_threads(1)``, decoder/encoder ``threads=1``), on frames
made from real footage (``../shared/data/reds_lr_demo_000``, bicubic-upscaled to 960x540 and to 3840x2160):

* decode 540p H.264 (libx264 CRF 18 medium, made once, not timed);
* staging: decoded yuv420p planes -> ring slot (the C++ host part, GIL released), and a 4K yuv420p ring slot ->
  ``av.VideoFrame`` for the encoder (unstaging);
* colour conversion, host path (swscale: 540p YUV -> RGB before the model, 4K RGB -> YUV after it) and the
  device path run on this CPU (``vsr_engine.colour`` in torch; on a GPU this is a few kernels);
* libx264 encoding of 4K yuv420p at each preset (CRF 18; ``PRESET:lossless`` = qp 0, what ``--lossless``
  does), ``threads=1``: core-seconds per frame. The 4K frames are bicubic upscales (smooth), which encode faster
  than real 4K detail: read the encode figures as a lower bound.

Cores for 30 fps = 30 x (decode + staging in/out + encode per frame) core-seconds, with colour on the device
(the pipeline) or on the host (the old path: + both swscale conversions); encoder threading is assumed to scale
linearly, which x264 roughly does up to a few dozen threads at 4K (optimistic). Timings are medians of
``--frames`` frames; on a shared machine they are noisy, so the figures are a budget, not a benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vsr_engine import _host, colour  # noqa: E402
from vsr_engine.io.frames import frame_to_rgb, rgb_to_frame  # noqa: E402
from vsr_engine.pipeline import FrameLayout, HostFrame, frame_planes  # noqa: E402

PRESETS = "ultrafast,superfast,veryfast,faster,fast,medium"


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores visible, torch {torch.__version__}"


def real_frames(folder: str, n: int, w: int, h: int):
    from PIL import Image
    names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    out = []
    for i in range(n):
        im = Image.open(os.path.join(folder, names[i % len(names)])).convert("RGB")
        out.append(np.asarray(im.resize((w, h), Image.BICUBIC)))
    return out


def median_ms(fn, items) -> float:
    ts = []
    for it in items:
        t0 = time.process_time()
        fn(it)
        ts.append(time.process_time() - t0)
    return 1000 * statistics.median(ts)


def make_540p(path: str, frames) -> None:
    import av
    with av.open(path, "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 960, 540, "yuv420p"
        s.codec_context.options = {"crf": "18", "preset": "medium"}
        for i, rgb in enumerate(frames):
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            f.pts = i
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def time_decode(path: str):
    """ms per frame decoding (threads=1) and the decoded frames (yuv420p)."""
    import av
    with av.open(path) as c:
        vs = c.streams.video[0]
        vs.codec_context.thread_count = 1
        vs.thread_type = "SLICE"
        t0 = time.process_time()
        frames = [f for f in c.decode(vs)]
        dt = time.process_time() - t0
    return 1000 * dt / len(frames), frames


def time_encode(frames_4k, preset: str, threads: int = 1) -> float:
    """ms per frame for libx264 (CRF 18 or ``PRESET:lossless``, ``threads``) over yuv420p 4K frames, flush included."""
    import av
    with tempfile.TemporaryDirectory() as d:
        with av.open(os.path.join(d, "o.mkv"), "w") as c:
            s = c.add_stream("libx264", rate=30)
            s.width, s.height, s.pix_fmt = 3840, 2160, "yuv420p"
            name, _, mode = preset.partition(":")
            rate = {"qp": "0"} if mode == "lossless" else {"crf": "18"}
            s.codec_context.options = {**rate, "preset": name, "threads": str(threads)}
            t0 = time.process_time()
            for i, f in enumerate(frames_4k):
                f.pts = i
                for p in s.encode(f):
                    c.mux(p)
            for p in s.encode(None):
                c.mux(p)
            dt = time.process_time() - t0
    return 1000 * dt / len(frames_4k)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "reds_lr_demo_000"))
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--presets", default=PRESETS)
    ap.add_argument("--out", default=None, help="write OUT.json and OUT.md")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    n = a.frames
    lo = real_frames(os.path.abspath(a.data), n, 960, 540)
    hi = [np.asarray(__import__("PIL.Image", fromlist=["Image"]).fromarray(f).resize((3840, 2160), 3)) for f in lo]
    r = {}
    with tempfile.TemporaryDirectory() as d:
        p540 = os.path.join(d, "in540.mp4")
        make_540p(p540, lo)
        r["decode_540p_h264"], dec = time_decode(p540)
    # staging: decoded planes -> ring slot (C++ backend when it builds), 4K slot -> av.VideoFrame
    lay_in = FrameLayout.from_format("yuv420p", 540, 960)
    ring = _host.HostRing(2, lay_in.nbytes, pin_memory=False)
    r["host_backend"] = ring.backend.name
    r["stage_540p"] = median_ms(lambda f: ring.stage(0, frame_planes(f)[1]), dec)
    yuv4k = [rgb_to_frame(f, "yuv420p", "bt709", "limited") for f in hi]
    lay_out = FrameLayout.from_format("yuv420p", 2160, 3840)
    slot = np.zeros(lay_out.nbytes, np.uint8)
    r["unstage_4k"] = median_ms(lambda _: HostFrame(slot, None, lay_out, 0).to_av(), range(n))
    # colour: host (swscale) vs the device path's torch code run on this CPU
    r["colour_in_host_540p"] = median_ms(lambda f: frame_to_rgb(f, "bt601", "limited"), dec)
    planes = [tuple(torch.from_numpy(p.copy()) for p in lay_in.split_numpy(_stage_bytes(f, lay_in))) for f in dec]
    r["colour_in_torch_cpu_540p"] = median_ms(lambda p: colour.yuv_to_rgb(*p, matrix="bt601"), planes)
    r["colour_out_host_4k"] = median_ms(lambda f: rgb_to_frame(f, "yuv420p", "bt709", "limited"), hi)
    rgb4k = [torch.from_numpy(f).permute(2, 0, 1).float().div(255) for f in hi[:3]]
    r["colour_out_torch_cpu_4k"] = median_ms(lambda t: colour.rgb_to_packed_yuv(t, matrix="bt709"), rgb4k)
    enc = {}
    for preset in a.presets.split(","):
        enc[preset] = time_encode(yuv4k, preset)
        print(f"encode 4K {preset}: {enc[preset]:.0f} ms/frame", flush=True)
    r["encode_4k_ms"] = enc
    fixed_dev = r["decode_540p_h264"] + r["stage_540p"] + r["unstage_4k"]
    fixed_host = fixed_dev + r["colour_in_host_540p"] + r["colour_out_host_4k"]
    rows = []
    for preset, e in enc.items():
        rows.append({"preset": preset, "encode_ms": round(e, 1), "core_ms_per_frame": round(fixed_dev + e, 1),
                     "cores_30fps_device_colour": round(30 * (fixed_dev + e) / 1000, 1),
                     "cores_30fps_host_colour": round(30 * (fixed_host + e) / 1000, 1)})
    res = {"machine": machine(), "frames": n, "ms_per_frame": {k: (round(v, 2) if isinstance(v, float) else v)
                                                               for k, v in r.items()}, "rows": rows}
    md = _markdown(res)
    print(md)
    if a.out:
        for ext, text in ((".json", json.dumps(res, indent=1)), (".md", md)):
            with open(a.out + ext + ".tmp", "w") as f:
                f.write(text)
            os.replace(a.out + ext + ".tmp", a.out + ext)


def _stage_bytes(f, lay) -> np.ndarray:
    buf = np.zeros(lay.nbytes, np.uint8)
    _host.stage_planes(buf, 0, frame_planes(f)[1])
    return buf


def _markdown(res) -> str:
    m = res["ms_per_frame"]
    lines = [f"Host-side budget, 540p -> 4K, CPU time per frame ({res['machine']}; median of {res['frames']} "
             "frames, shared machine: noisy)", "",
             "| stage (per frame, 1 thread) | ms |", "|---|---:|",
             f"| decode 540p H.264 | {m['decode_540p_h264']:.1f} |",
             f"| stage 540p yuv420p planes -> ring slot ({m['host_backend']}) | {m['stage_540p']:.2f} |",
             f"| unstage 4K yuv420p slot -> av.VideoFrame | {m['unstage_4k']:.2f} |",
             f"| colour in, host swscale 540p YUV->RGB | {m['colour_in_host_540p']:.1f} |",
             f"| colour in, torch on this CPU 540p (GPU path's code) | {m['colour_in_torch_cpu_540p']:.1f} |",
             f"| colour out, host swscale 4K RGB->yuv420p | {m['colour_out_host_4k']:.1f} |",
             f"| colour out, torch on this CPU 4K (GPU path's code) | {m['colour_out_torch_cpu_4k']:.1f} |", "",
             "| libx264 preset (4K, CRF 18, threads=1) | encode ms/frame | host core-ms/frame (colour on device) "
             "| cores for 30 fps, colour on device | cores for 30 fps, colour on host |", "|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['preset']} | {r['encode_ms']:.0f} | {r['core_ms_per_frame']:.0f} | "
                     f"{r['cores_30fps_device_colour']} | {r['cores_30fps_host_colour']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
