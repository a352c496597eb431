"""How much the deformable conv's border rule changes TDAN: torchvision / mmcv v1 (what vsr_engine computes) vs
the MSRA v1 kernel of the official 1zb extension (tests/tdan_reference.py, ``rule="msra"``).

    python bench/tdan_edge_rules.py ../shared/data/vid4_gt/walk [--weights FILE] [--frames 5]

Runs the centre frame of the first ``--frames`` frames (BI x4 LR of the GT) both ways; prints the Y-PSNR of each
against the GT (crop 0 and 8) and the largest output difference inside / within 8 HR pixels of the border.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import tdan_reference as R  # noqa: E402
import vsr_engine.models.tdan as T  # noqa: E402
from vsr_engine import load_model  # noqa: E402
from vsr_engine.training.data import bi_degrade, read_folder  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("clip")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--frames", type=int, default=5)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    gts = read_folder(a.clip)[:a.frames]
    lr = torch.from_numpy(np.stack([bi_degrade(g, 4) for g in gts])).permute(0, 3, 1, 2).float().div(255)
    model = load_model("tdan", weights=a.weights)
    c = len(gts) // 2
    outs = {}
    for rule in ("torchvision", "msra"):
        T._OP[:] = [lambda x, o, w, rule=rule: R.deform_conv_ref(x, o, w, 1, rule)]
        with torch.no_grad():
            y = model(lr.unsqueeze(0))[0, c]
        outs[rule] = (y.clamp(0, 1) * 255).round()
    T._OP.clear()
    d = (outs["torchvision"] - outs["msra"]).abs()
    inner = d[:, 8:-8, 8:-8].max().item()
    print(f"weights {model.weights_path}; frame {c} of {os.path.basename(os.path.normpath(a.clip))}")
    for rule, y in outs.items():
        img = y.byte().permute(1, 2, 0).numpy()
        print(f"  {rule:>11s}: Y-PSNR {psnr_y(img, gts[c]):.3f} dB (crop 0), {psnr_y(img, gts[c], 8):.3f} dB (crop 8)")
    print(f"  max |difference| (grey levels): {d.max().item():.0f} overall, {inner:.0f} more than 8 px from the border;"
          f" pixels that differ: {(d > 0).float().mean().item() * 100:.2f} %")


if __name__ == "__main__":
    main()
