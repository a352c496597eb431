"""Y-PSNR of a model on Vid4-style ground-truth folders (BI x4 LR made with the MATLAB-compatible bicubic).

Used by ``vsr-engine eval`` and ``bench/eval_vid4.py``. Each clip goes through the model as one whole sequence
(or, with ``window``, through the streaming :class:`~vsr_engine.engine.Engine`); PSNR is the mean over frames
of the Y-channel PSNR (outputs clamped and rounded to uint8, no border crop unless asked).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import List, Optional, Sequence

import numpy as np
import torch

from .data import bi_degrade, read_folder
from ..metrics import psnr_y


def _psnr_fit(out, gt: np.ndarray, crop_border: int) -> float:
    """PSNR on the common top-left region (at a non-integer scale floor(r * ceil(H / r)) may exceed H by a pixel)."""
    h, w = gt.shape[:2]
    oh, ow = (out.shape[-2:] if torch.is_tensor(out) else out.shape[:2])
    if (oh, ow) != (h, w):
        h, w = min(h, oh), min(w, ow)
        out = out[..., :h, :w] if torch.is_tensor(out) else out[:h, :w]
        gt = gt[:h, :w]
    return psnr_y(out, gt, crop_border)


def eval_clip(model, gts: Sequence[np.ndarray], device="cpu", dtype=torch.float32, window: int = 0,
              overlap: int = 0, crop_border: int = 0, scale: float = 4, degradation: str = "bi",
              keep: Optional[list] = None, lrs: Optional[Sequence[np.ndarray]] = None) -> List[float]:
    """Per-frame Y-PSNR of ``model`` on the BI LR of ``gts`` at ``scale`` (MATLAB ``imresize(gt, 1/scale)``),
    whole sequence or windows through the Engine. ``model=None`` scores MATLAB bicubic upscaling."""
    if lrs is not None:    # no-reference: real LR frames in, outputs kept, no PSNR
        outs = list(_engine_run(model, lrs, device, dtype, window or 32, overlap, scale))
        if keep is not None:
            keep.extend(outs)
        return []
    lrs = [bi_degrade(g, scale) for g in gts]
    if degradation == "bd":   # DUF's BD: 13x13 Gaussian (sigma 1.6 at x4), every r-th pixel; rounded to uint8
        from .duf import bd_degrade
        if float(scale) not in (2.0, 3.0, 4.0):
            raise ValueError(f"BD degradation is defined for x2, x3, x4, not x{scale:g}")
        lrs = [(bd_degrade(torch.from_numpy(np.array(g)).permute(2, 0, 1).double() / 255, int(scale)).clamp(0, 1) * 255)
               .round().byte().permute(1, 2, 0).numpy() for g in gts]
    if model is None:
        from ..imresize import imresize
        return [_psnr_fit(imresize(lr, scale), gts[i], crop_border) for i, lr in enumerate(lrs)]
    any_scale = hasattr(model, "output_size")  # built for a scale (load_model(..., scale=r)); plain x4 otherwise
    if not any_scale and float(scale) != 4.0:
        raise ValueError(f"{type(model).__name__} upscales x4 only; cannot evaluate it at x{scale:g}")
    if window:
        from ..engine import Engine
        old = getattr(model, "scale", None)
        if any_scale:
            model.scale = float(scale)  # the Engine runs the model at its own scale
        try:
            outs = list(Engine(model, device=device, dtype=dtype, window=window, overlap=overlap).run(lrs))
        finally:
            if any_scale:
                model.scale = old
        if keep is not None:
            keep.extend(outs)
        return [_psnr_fit(outs[i], gts[i], crop_border) for i in range(len(gts))]
    x = torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float().div(255.0).unsqueeze(0)
    with torch.inference_mode():
        y = model(x.to(device, dtype), **({"scale": float(scale)} if any_scale else {})).float().cpu()[0]
    if keep is not None:
        from ..metrics import to_uint8
        keep.extend(to_uint8(y[i]) for i in range(len(gts)))
    return [_psnr_fit(y[i], gts[i], crop_border) for i in range(len(gts))]


def _engine_run(model, lrs, device, dtype, window, overlap, scale):
    from ..engine import Engine
    return Engine(model, device=device, dtype=dtype, window=window, overlap=overlap).run(lrs)


def perceptual(outs: Sequence[np.ndarray], gts: Optional[Sequence[np.ndarray]], metrics: Sequence[str],
               crop_border: int = 0) -> dict:
    """Per-frame LPIPS (needs ``gts``) and NIQE of the outputs: {name: [values]}."""
    from ..metrics import lpips, niqe
    res = {}
    if "lpips" in metrics:
        if gts is None:
            raise ValueError("lpips needs ground truth (use niqe for no-reference evaluation)")
        res["lpips"] = []
        for o, g in zip(outs, gts):
            h, w = min(o.shape[0], g.shape[0]), min(o.shape[1], g.shape[1])
            res["lpips"].append(lpips(o[:h, :w], g[:h, :w]))
    if "niqe" in metrics:
        res["niqe"] = [niqe(o, crop_border=crop_border) for o in outs]
    return res


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("clips", nargs="+", help="folders of ground-truth frames")
    ap.add_argument("--model", default="basicvsr")
    ap.add_argument("--variant", default=None, help="weights variant (default: vimeo-bi for basicvsr, the BI model)")
    ap.add_argument("--scale", type=float, default=4.0, help="BI scale of the LR, any r in [1, 16] for every model (x4 models resample; default 4)")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--frames", type=int, default=0, help="use only the first N frames (0 = all)")
    ap.add_argument("--crop", type=int, default=0, help="centre-crop GT to this size (multiple of 4; 0 = none)")
    ap.add_argument("--crop-border", type=int, default=0, help="pixels ignored at each border for PSNR")
    ap.add_argument("--window", type=int, default=0, help="stream through the Engine with this window (0 = whole)")
    ap.add_argument("--overlap", type=int, default=8, help="Engine overlap (with --window)")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--degradation", choices=("bi", "bd"), default="bi",
                    help="bi: MATLAB bicubic (default); bd: Gaussian blur + subsampling (DUF's test protocol)")
    ap.add_argument("--metrics", default="psnr", help="comma list of psnr, lpips (paired), niqe (no reference); "
                                                      "default psnr. LPIPS/NIQE files: python -m vsr_engine.lpips / "
                                                      "python -m vsr_engine.niqe once")
    ap.add_argument("--no-reference", action="store_true", help="the folders are real low-resolution frames (no "
                                                                "ground truth): upscale them and report NIQE")


def run(args, out=print) -> float:
    from .. import load_model
    from ..engine import resolve_device
    from ..models import check_scale
    device = resolve_device(args.device)
    variant = args.variant or ("vimeo-bi" if args.model == "basicvsr" and not args.weights else None)
    try:
        check_scale(args.model, args.scale)
    except ValueError as e:
        from ..video import VsrInputError
        raise VsrInputError(str(e)) from None
    model = load_model(args.model, weights=args.weights, variant=variant,
                       **({"scale": args.scale} if float(args.scale) != 4.0 else {})).to(device)
    out(f"model {args.model} x{args.scale:g} weights {model.weights_path} ({model.weights_layout}) device {device}"
        + (f" window {args.window} overlap {args.overlap}" if args.window else ""))
    metrics = [m.strip().lower() for m in getattr(args, "metrics", "psnr").split(",") if m.strip()]
    bad = [m for m in metrics if m not in ("psnr", "lpips", "niqe")]
    nr = getattr(args, "no_reference", False)
    if bad or (nr and set(metrics) - {"niqe", "psnr"}):
        from ..video import VsrInputError
        raise VsrInputError(f"--metrics: unknown {', '.join(bad)} (choose psnr, lpips, niqe)" if bad else
                            "--no-reference: only niqe can be computed without ground truth")
    if nr:
        for clip in args.clips:
            keep: list = []
            lrs = read_folder(clip)[:args.frames or None]
            eval_clip(model, [], device, window=args.window, overlap=args.overlap, scale=args.scale, keep=keep,
                      lrs=lrs)
            vals = perceptual(keep, None, ["niqe"], args.crop_border)["niqe"]
            out(f"{os.path.basename(os.path.normpath(clip)):>10s}: NIQE {np.mean(vals):.3f}  ({len(lrs)} frames)")
        return float("nan")
    means = []
    for clip in args.clips:
        gts = read_folder(clip)
        if args.frames:
            gts = gts[:args.frames]
        if args.crop:
            h, w = gts[0].shape[:2]
            c = args.crop
            gts = [g[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c] for g in gts]
        t0 = time.time()
        keep: Optional[list] = [] if set(metrics) - {"psnr"} else None
        ps = eval_clip(model, gts, device, window=args.window, overlap=args.overlap, crop_border=args.crop_border,
                       scale=args.scale, degradation=getattr(args, "degradation", "bi"), keep=keep)
        means.append(float(np.mean(ps)))
        extra = ""
        if keep is not None:
            for k, v in perceptual(keep, gts, metrics, args.crop_border).items():
                extra += f", {k.upper()} {np.mean(v):.4f}"
        out(f"{os.path.basename(os.path.normpath(clip)):>10s}: {means[-1]:.3f} dB{extra}  ({len(gts)} frames "
            f"{gts[0].shape[1]}x{gts[0].shape[0]}, {time.time() - t0:.1f} s)")
    mean = float(np.mean(means))
    out(f"{'mean':>10s}: {mean:.3f} dB")
    return mean


def main(argv: Optional[Sequence[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    run(ap.parse_args(argv))


if __name__ == "__main__":
    main()
