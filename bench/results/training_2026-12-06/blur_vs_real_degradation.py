# issue 25 (2026-12-06 b): which Gaussian blur of the BI LR imitates the real target degradation (bigbuckbunny frames, noise + x264 CRF 35); run in a folder holding bench/results/training_2026-12-05/adapt4_gt_diag.py (it makes srcdeg.npz). PYTHONPATH=. python bench/results/training_2026-12-06/blur_vs_real_degradation.py
import sys, numpy as np, torch
sys.path.insert(0, "/work/main"); sys.argv=["x"]
torch.set_num_threads(1)
exec(open("adapt4_gt_diag.py").read().split("if not os.path.exists")[0])
from vsr_engine.training.adapt import BlurDegradation
z = np.load("srcdeg.npz"); xs, xd = t(list(z["lr"])), t(list(z["deg"]))
for s in (0.5, 0.7, 0.8, 0.9, 1.0, 1.2):
    with torch.no_grad(): y = BlurDegradation(s, 1e-9)(xs)
    print(s, "HF %.2f PSNR(blur, deg) %.2f" % (hf(y), psnr(y, xd)))
