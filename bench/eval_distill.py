"""Vid4 city + walk (whole clips, BI x4, Y-PSNR, no crop) of distilled students and bicubic (issue 25).
    python bench/eval_distill.py [--bicubic] STUDENT.safetensors ..."""
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vsr_engine import load_model  # noqa: E402
from vsr_engine.training.data import read_folder  # noqa: E402
from vsr_engine.training.evaluate import eval_clip  # noqa: E402

VID4 = "/work/shared/data/vid4_gt"
torch.set_num_threads(1)
for arg in sys.argv[1:]:
    m = None if arg == "--bicubic" else load_model("basicvsr", weights=arg)
    res = {}
    for clip in ("city", "walk"):
        t0 = time.time()
        res[clip] = float(np.mean(eval_clip(m, read_folder(os.path.join(VID4, clip)))))
        print(f"{arg} {clip}: {res[clip]:.3f} dB ({time.time() - t0:.0f} s)", flush=True)
    print(f"{arg} mean: {np.mean(list(res.values())):.3f} dB", flush=True)
