# issue 25 (2026-12-06 b): one 1-thread bf16 step cost: teacher forward vs 32/64-feature student forward+backward, batch 2 x 5 x 32x32. python bench/results/training_2026-12-06/step_cost.py
import sys, time, torch
sys.path.insert(0, "/work/main")
from vsr_engine import load_model
from vsr_engine.models.basicvsr import BasicVSR
torch.set_num_threads(1)
t = load_model("basicvsr", variant="vimeo-bi").eval()
x = torch.rand(2,5,3,32,32)
def tm(f, n=3):
    f(); t0=time.time()
    for _ in range(n): f()
    return (time.time()-t0)/n
with torch.autocast("cpu", torch.bfloat16):
    with torch.no_grad():
        print("teacher fwd bf16", tm(lambda: t(x)))
    for nf in (32, 64):
        s = BasicVSR(nf, 4); s.spynet.requires_grad_(False)
        print(nf, "student fwd+bwd bf16", tm(lambda: s(x).float().mean().backward()))
