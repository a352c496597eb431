"""Y-PSNR of a model on Vid4-style ground-truth folders (BI x4 LR made with the MATLAB-compatible bicubic).

    python bench/eval_vid4.py --model basicvsr --variant vimeo-bi ../shared/data/vid4_gt/city ../shared/data/vid4_gt/walk

Each clip goes through the model as one whole sequence; PSNR is the mean over frames of the Y-channel PSNR
(outputs clamped and rounded to uint8, no border crop). ``--frames`` / ``--crop`` evaluate a part only;
``--window N --overlap M`` streams through the Engine instead. Same as ``vsr-engine eval``; the logic lives in
``vsr_engine/training/evaluate.py``.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vsr_engine.training.evaluate import eval_clip, main  # noqa: E402,F401

if __name__ == "__main__":
    main()
