# issue 25 screen (2026-12-06 b): the teacher truncated to a subset of its blocks, untrained, Y-PSNR on city frames 0..11; 2 threads, AMD EPYC. python bench/results/training_2026-12-06/screen_truncated_teacher.py
import sys, time, os, numpy as np, torch
sys.path.insert(0, "/work/main")
from vsr_engine import load_model
from vsr_engine.models.basicvsr import BasicVSR
from vsr_engine.training.data import read_folder
from vsr_engine.training.evaluate import eval_clip
torch.set_num_threads(2)
t = load_model("basicvsr", variant="vimeo-bi").eval()
gts = read_folder("/work/shared/data/vid4_gt/city")[:12]
def sub(idx):
    s = BasicVSR(64, len(idx))
    sd = t.state_dict(); new = {}
    for k, v in s.state_dict().items():
        if ".main.2." in k:
            pre, rest = k.split(".main.2.")
            i, tail = rest.split(".", 1)
            new[k] = sd[f"{pre}.main.2.{idx[int(i)]}.{tail}"]
        else:
            new[k] = sd[k]
    s.load_state_dict(new); return s.eval()
print("bicubic", np.mean(eval_clip(None, gts)))
for name, idx in [("first4", [0,1,2,3]), ("even4", [0,10,20,29]), ("first8", list(range(8))), ("even8", list(range(0,30,4))[:8])]:
    t0=time.time(); print(name, np.mean(eval_clip(sub(idx), gts)), time.time()-t0, flush=True)
