#!/usr/bin/env python3
"""Fidelity of the fast step (vsr_engine.fast) against the official model in fp32, on real frames, any device.

    python3 bench/eval_fast_fidelity.py --frames 6 --crop 144x176    # -> bench/results/fast_fidelity_cpu.json

Official BasicVSR_REDS4 weights, the first frames of Vid4 city (ground truth, shrunk x4 with the MATLAB-style
imresize, cropped), fp32 model forward as the reference; reports the fast step in fp32 (max |diff|: the same
function) and in fp16 / bf16 with SPyNet in fp32 or in the activation dtype, and bf16 with fp32 islands (the residual
stream, the output layer): PSNR vs the fp32 output, RGB, [0, 1].
"""
import argparse
import glob
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from vsr_engine import load_model  # noqa: E402
from vsr_engine.fast import FastBasicVSR  # noqa: E402
from vsr_engine.imresize import imresize  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data", "vid4_gt", "city"))
    ap.add_argument("--weights", default=None, help="BasicVSR checkpoint (default: the official REDS4 file)")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--crop", default="64x96")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fast_fidelity_cpu.json"))
    a = ap.parse_args(argv)
    from PIL import Image
    ch, cw = (int(v) for v in a.crop.split("x"))
    files = sorted(glob.glob(os.path.join(a.data, "*.png")))[:a.frames]
    lr = [imresize(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255, 0.25) for f in files]
    x = torch.stack([torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1) for v in lr]).clamp(0, 1)
    x = x[:, :, :ch, :cw].unsqueeze(0).contiguous()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    m = load_model("basicvsr", weights=a.weights).eval().to(dev)
    x = x.to(dev)
    res = {"device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu", "frames": a.frames,
           "crop": a.crop, "data": os.path.relpath(a.data, os.path.dirname(HERE)), "weights": m.weights_path
           if hasattr(m, "weights_path") else a.weights, "rows": []}
    with torch.no_grad():
        t = time.perf_counter()
        ref = m(x).float()
        res["reference_s"] = round(time.perf_counter() - t, 2)
        out = FastBasicVSR(m, torch.float32, graphs=False).forward(x)
        res["fast_fp32_max_abs_diff"] = (out - ref).abs().max().item()
        for dt, fdt, isl in [(torch.float16, torch.float32, ()), (torch.float16, torch.float16, ()),
                             (torch.bfloat16, torch.float32, ()), (torch.bfloat16, torch.bfloat16, ()),
                             (torch.bfloat16, torch.bfloat16, ("output",)),
                             (torch.bfloat16, torch.bfloat16, ("residual",)),
                             (torch.bfloat16, torch.bfloat16, ("residual", "output"))]:
                o = FastBasicVSR(m, dt, flow_dtype=fdt, graphs=False, fp32_islands=isl).forward(x).float()
                d = o.clamp(0, 1) - ref.clamp(0, 1)
                row = {"dtype": str(dt).split(".")[1], "spynet": str(fdt).split(".")[1],
                       "fp32_islands": "+".join(isl) or "none",
                       "psnr_vs_fp32_db": round(10 * np.log10(1 / d.square().mean().item()), 2),
                       "max_abs_diff": round(d.abs().max().item(), 5)}
                res["rows"].append(row)
                print(row, flush=True)
    print("fast fp32 max |diff| vs model:", res["fast_fp32_max_abs_diff"])
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
