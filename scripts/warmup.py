#!/usr/bin/env python3
"""Pre-build everything vsr_engine compiles at first use on this machine, so the first real run starts warm.

    python3 scripts/warmup.py                         # CUDA: basicvsr and realbasicvsr, fp16, 180x320 and 540x960
    python3 scripts/warmup.py --model basicvsr --size 180x320 --dtype fp16 --json warm.json

What the package compiles at first use, and where it keeps it (all persistent per user by default, none in /tmp):
  * the host staging ring, csrc/host_ring.cpp (C++, torch.utils.cpp_extension) when no prebuilt
    ``vsr_engine._host_ext`` is installed -> ``$VSR_ENGINE_HOME/build/host_ext-<hash>`` (default home
    ``~/.cache/vsr_engine``);
  * the CUDA kernels, csrc/*.cu (nvcc, for this GPU's architecture) when no prebuilt ``vsr_engine._C`` is
    installed -> ``$VSR_ENGINE_HOME/ext/<hash>``;
  * the triton kernels, one binary (and one small C launcher) per specialisation (dtype, alignment and
    divisibility of sizes) -> ``$TRITON_CACHE_DIR`` (default ``~/.triton/cache``);
  * the cupy backend's NVRTC builds of csrc/ -> ``$CUPY_CACHE_DIR`` (default ``~/.cupy/kernel_cache``);
  * PTX the driver JITs for a newer GPU -> ``$CUDA_CACHE_PATH`` (default ``~/.nv/ComputeCache``).
This script loads the first two (building them if needed) and then runs the streaming Engine once per model,
dtype and frame size on a few random frames (random weights: the compiled code does not depend on them), which
compiles the kernels a real run at those sizes uses. Other frame sizes may still compile a specialisation or two
on first use (seconds). On a machine without CUDA only the host extension is built (``--device cpu`` runs the
Engine pass too, for tests). Prints what was built and where; ``--json`` writes the same.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))


def _count(path: str):
    n = b = 0
    for dp, _, fs in os.walk(path):
        for f in fs:
            try:
                b += os.path.getsize(os.path.join(dp, f))
                n += 1
            except OSError:
                pass
    return n, b


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model to warm (repeatable; default basicvsr and realbasicvsr)")
    ap.add_argument("--size", action="append", help="HxW LR frame size (repeatable; default 180x320 and 540x960)")
    ap.add_argument("--dtype", action="append", help="fp16 / bf16 / fp32 (repeatable; default fp16)")
    ap.add_argument("--window", type=int, default=None, help="the Engine's window (default: the Engine's default)")
    ap.add_argument("--frames", type=int, default=None, help="frames per Engine pass (default: window + 8)")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present) or cpu (tests: torch backend)")
    ap.add_argument("--json", help="also write the report here")
    a = ap.parse_args(argv)
    import numpy as np
    import torch
    from engine_start import cache_locations  # bench/engine_start.py: one list of the cache locations
    from vsr_engine import _host, load_model, ops
    from vsr_engine.engine import DEFAULT_WINDOW, Engine
    a.window = a.window or DEFAULT_WINDOW
    a.frames = a.frames or a.window + 8

    t_all = time.perf_counter()
    caches = cache_locations()
    before = {k: _count(p) for k, p in caches.items()}
    rep: dict = {"caches": caches, "steps": []}

    def step(name, fn):
        t = time.perf_counter()
        try:
            info = fn()
            ok = "ok"
        except Exception as e:  # report and go on: a failed step leaves that part to first use
            info, ok = f"{type(e).__name__}: {e}", "failed"
        rep["steps"].append({"step": name, "status": ok, "seconds": round(time.perf_counter() - t, 2), "info": info})
        print(f"warmup: {name}: {ok} ({time.perf_counter() - t:.1f} s) {info if info else ''}", flush=True)

    def host():
        st = _host.status(load=True)
        return {k: st.get(k) for k in ("active", "how", "reason", "build_dir") if k in st}
    step("host extension", host)

    cuda = torch.cuda.is_available() and a.device != "cpu"
    if cuda:
        from vsr_engine.ops import _cuda, _cupy
        step("CUDA extension", lambda: (_cuda.lib(), _cuda.reason(load=False))[1])
        step("cupy probe", lambda: _cupy.usable("cuda")[1])
    elif a.device != "cpu":
        rep["note"] = "no CUDA device: only the host extension is built here"
        print(f"warmup: {rep['note']}", flush=True)
    if cuda or a.device == "cpu":
        dev = torch.device("cuda" if cuda else "cpu")
        models = a.model or ["basicvsr", "realbasicvsr"]
        sizes = [tuple(int(v) for v in s.lower().split("x")) for s in (a.size or ["180x320", "540x960"])]
        dtypes = a.dtype or ["fp16"]
        rng = np.random.default_rng(0)
        for name in models:
            torch.manual_seed(0)
            master = load_model(name, weights=False).eval()
            for dt in dtypes:
                for h, w in sizes:
                    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(a.frames)]

                    def run(master=master, dt=dt, frames=frames):
                        import copy
                        with ops.use_backend(None if cuda else "torch"):
                            eng = Engine(copy.deepcopy(master), device=dev, dtype=dt, window=a.window)
                            k = sum(1 for _ in eng.run(frames))
                        if cuda:
                            torch.cuda.synchronize()
                        return f"{k} frames"
                    step(f"Engine {name} {dt} {h}x{w}", run)
    after = {k: _count(p) for k, p in caches.items()}
    rep["built"] = {k: {"path": caches[k], "files_added": after[k][0] - before[k][0],
                        "mb_added": round((after[k][1] - before[k][1]) / 1e6, 2), "files": after[k][0]}
                    for k in caches}
    rep["seconds"] = round(time.perf_counter() - t_all, 2)
    for k, v in rep["built"].items():
        print(f"warmup: cache {k:16s} {v['path']}: +{v['files_added']} files (+{v['mb_added']} MB), "
              f"{v['files']} in all", flush=True)
    print(f"warmup: done in {rep['seconds']} s", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=2, default=str)
    return 1 if any(s["status"] == "failed" for s in rep["steps"]) else 0


if __name__ == "__main__":
    sys.exit(main())
