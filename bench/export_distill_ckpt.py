"""Export a distill run's last.pth (OUT/last.pth) as the student checkpoint, e.g. for a run cut short by its budget:
    python bench/export_distill_ckpt.py RUN_DIR OUT.safetensors"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vsr_engine.models.basicvsr import BasicVSR  # noqa: E402
from vsr_engine.training.distill import export_student  # noqa: E402

ck = torch.load(os.path.join(sys.argv[1], "last.pth"), map_location="cpu", weights_only=False)
s = BasicVSR(ck["config"]["student"]["num_feat"], ck["num_block"])
s.load_state_dict(ck["student"])
export_student(s, sys.argv[2], {**ck["config"], "steps_done": ck["step"]})
print(sys.argv[2], "step", ck["step"], "blocks", ck["num_block"])
