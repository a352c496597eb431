"""TDAN on Vid4 (BI x4, Y-PSNR, 8-pixel border crop) beside bicubic, and the official TDAN result frames scored
by the same code.

    python bench/eval_tdan.py ../shared/data/vid4_gt/city ../shared/data/vid4_gt/walk \
        [--weights FILE] [--calendar-gt DIR --calendar-res DIR [--calendar-lr DIR]] [--json OUT]

Each clip: LR = MATLAB bicubic x1/4 of the GT (``vsr_engine.imresize``), TDAN over the whole clip (every frame from
its 5-frame window, mmagic's reflection at the ends unless ``--edge official``), outputs rounded to uint8, mean
over frames of Y-PSNR with 8 pixels cropped at each border (mmagic's TDAN metric). ``--calendar-res``: the
official repository's ``res/calendar`` frames (computed by the authors from their ``LR_bicubic`` frames), scored
against ``--calendar-gt`` with the same ``psnr_y``; ``--calendar-lr`` compares their LR with ours.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vsr_engine import load_model  # noqa: E402
from vsr_engine.training.data import bi_degrade, read_folder  # noqa: E402
from vsr_engine.training.evaluate import eval_clip  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*")
    ap.add_argument("--weights", default=None, help="default: the weights `load_model('tdan')` finds")
    ap.add_argument("--edge", default="reflection", choices=["reflection", "official"])
    ap.add_argument("--calendar-gt")
    ap.add_argument("--calendar-res")
    ap.add_argument("--calendar-lr")
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_model("tdan", weights=a.weights, edge=a.edge)
    res = {"weights": model.weights_path, "layout": model.weights_layout, "edge": a.edge,
           "metric": "BI x4 (vsr_engine.imresize), Y-PSNR, crop 8, mean over frames", "clips": {}}
    print(f"tdan weights {model.weights_path} ({model.weights_layout}), edge {a.edge}")
    clips = list(a.clips) + ([a.calendar_gt] if a.calendar_gt else [])
    for clip in clips:
        gts = read_folder(clip)
        name = os.path.basename(os.path.normpath(clip))
        name = "calendar" if clip == a.calendar_gt else name
        t0 = time.time()
        bic = float(np.mean(eval_clip(None, gts, crop_border=8)))
        ours = float(np.mean(eval_clip(model, gts, crop_border=8)))
        row = {"frames": len(gts), "size": f"{gts[0].shape[1]}x{gts[0].shape[0]}", "bicubic": round(bic, 3),
               "tdan": round(ours, 3), "seconds": round(time.time() - t0, 1)}
        if clip == a.calendar_gt and a.calendar_res:
            res_frames = read_folder(a.calendar_res)
            row["official_tdan_res"] = round(float(np.mean([psnr_y(r, g, 8) for r, g in zip(res_frames, gts)])), 3)
            row["official_res_frames"] = len(res_frames)
            if a.calendar_lr:
                theirs = np.stack(read_folder(a.calendar_lr)).astype(int)
                mine = np.stack([bi_degrade(g, 4) for g in gts]).astype(int)
                d = np.abs(theirs - mine)
                row["their_lr_vs_ours"] = {"mean_abs": round(float(d.mean()), 4), "max_abs": int(d.max())}
        res["clips"][name] = row
        print(f"{name:>9s}: {json.dumps(row)}", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
