"""One fresh process that starts the streaming Engine as a user does and times it (bench/gpu_proof.py's coldstart
section runs it twice: with empty kernel caches, then again on the same caches).

    python3 bench/engine_start.py --json /tmp/start.json [--weights W.pth] [--npz frames.npz] [--fidelity]

Times (``time.perf_counter``, the device synchronised at the end): ``import_s`` (torch + vsr_engine),
``model_s`` (load_model), ``first_frame_s`` from the ``Engine(...)`` call to the first output frame, ``total_s``
from ``Engine(...)`` to the last frame, ``steady_fps`` over the frames after the first window. Frames are in
memory (the npz's real frames, repeated forwards and backwards up to --frames, else random). ``--fidelity``: after
the timed run, the npz's frames once more through Engine fp16 and Engine fp32 (both warm): PSNR of the uint8
outputs. Also written: which host backend and CUDA extension were used and the cache locations in effect.
"""
from __future__ import annotations

import time

T_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cache_locations() -> dict:
    """Where this process's compiled code goes (the defaults unless the environment says otherwise)."""
    home = os.path.expanduser("~")
    out = {"vsr_engine_home": os.environ.get("VSR_ENGINE_HOME") or os.path.join(home, ".cache", "vsr_engine"),
           "triton": os.environ.get("TRITON_CACHE_DIR") or os.path.join(
               os.environ.get("TRITON_HOME") or home, ".triton", "cache"),
           "cupy": os.environ.get("CUPY_CACHE_DIR") or os.path.join(home, ".cupy", "kernel_cache"),
           "cuda_driver": os.environ.get("CUDA_CACHE_PATH") or os.path.join(home, ".nv", "ComputeCache"),
           "torch_extensions": os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
               os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "torch_extensions")}
    import getpass
    import tempfile
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    # torch.compile's cache (the package does not compile with it; listed because its default is under /tmp)
    out["inductor"] = os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                                                f"torchinductor_{user}")
    try:  # what triton itself says (triton >= 3.3)
        from triton import knobs
        out["triton"] = knobs.cache.dir or out["triton"]
    except Exception:
        pass
    return out


def frames_for(a, np):
    if a.npz:
        real = list(np.load(a.npz)["frames"])
        if a.size:
            h, w = a.size
            real = [f[:h, :w] for f in real]
        seq, fwd = [], True
        while len(seq) < a.frames:  # ping-pong: no hard cut in the motion
            seq += real if fwd else real[::-1]
            fwd = not fwd
        return seq[:a.frames], real
    h, w = a.size or (180, 320)
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(a.frames)], None


def psnr_u8(a, b, np) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return round(10 * math.log10(255.0 ** 2 / mse), 2) if mse > 0 else float("inf")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="result file (written atomically)")
    ap.add_argument("--model", default="basicvsr")
    ap.add_argument("--weights", default=None, help="checkpoint; random init if not given")
    ap.add_argument("--npz", default=None, help="real frames (npz with 'frames': T,H,W,3 uint8)")
    ap.add_argument("--size", default=None, help="HxW of random frames, or a crop of the npz frames")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--backend", default=None, help="force one ops backend (e.g. torch); default automatic")
    ap.add_argument("--fidelity", action="store_true", help="also Engine fp16 vs fp32 on the npz frames")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    a = ap.parse_args(argv)
    a.size = tuple(int(v) for v in a.size.lower().split("x")) if a.size else None
    res: dict = {"argv": sys.argv[1:], "pid": os.getpid(), "caches": cache_locations()}

    t = time.perf_counter()
    import numpy as np
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    res["import_torch_s"] = round(time.perf_counter() - t, 3)
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    t = time.perf_counter()
    from vsr_engine import load_model, ops
    from vsr_engine.engine import Engine, resolve_device
    res["import_vsr_engine_s"] = round(time.perf_counter() - t, 3)
    res["import_s"] = round(res["import_torch_s"] + res["import_vsr_engine_s"], 3)
    if a.backend:
        ops.set_backend(a.backend)
    dev = resolve_device(a.device)
    frames, real = frames_for(a, np)
    t = time.perf_counter()
    model = load_model(a.model, weights=a.weights or False).eval()
    res["model_s"] = round(time.perf_counter() - t, 3)
    res.update(model=a.model, weights=os.path.basename(a.weights) if a.weights else "random init",
               device=str(dev), dtype=a.dtype, window=a.window, frames=len(frames),
               size=f"{frames[0].shape[0]}x{frames[0].shape[1]}", frames_source="npz (real)" if real else "random")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    import copy
    master = copy.deepcopy(model) if a.fidelity and real is not None else None  # Engine casts its model in place
    stamps = []
    t0 = time.perf_counter()
    eng = Engine(model, device=dev, dtype=a.dtype, window=a.window)
    res["engine_ctor_s"] = round(time.perf_counter() - t0, 3)
    for _ in eng.run(frames):
        stamps.append(time.perf_counter())
    sync()
    t_end = time.perf_counter()
    n = len(stamps)
    k = min(a.window, n // 2)  # frames after the first window: the steady rate
    res.update(frames_out=n, first_frame_s=round(stamps[0] - t0, 3) if n else None, total_s=round(t_end - t0, 3),
               fps=round(n / (t_end - t0), 2) if n else None,
               steady_fps=round((n - k) / (stamps[-1] - stamps[k - 1]), 2) if n > k >= 1 and stamps[-1] > stamps[k - 1]
               else None,
               process_to_first_frame_s=round(stamps[0] - T_START, 3) if n else None)
    s = eng.last_summary
    if s is not None:
        res["stages"] = {k2: round(v, 3) for k2, v in (s.stages or {}).items()}
        res["bound_by"] = s.bound_by
    try:
        from vsr_engine import _host
        st = _host.status(load=False)
        res["host_backend"] = {k2: st.get(k2) for k2 in ("active", "how", "reason", "load_s", "build_dir") if k2 in st}
    except Exception as e:
        res["host_backend"] = f"unknown ({type(e).__name__}: {e})"
    try:
        from vsr_engine.ops import _cuda
        res["cuda_ext"] = _cuda.reason(load=False)
    except Exception as e:
        res["cuda_ext"] = f"unknown ({type(e).__name__}: {e})"
    if a.fidelity and real is not None:
        t = time.perf_counter()
        outs = {}
        for dt in (a.dtype, "fp32"):
            outs[dt] = list(Engine(copy.deepcopy(master), device=dev, dtype=dt, window=a.window).run(real))
        sync()
        pairs = list(zip(outs[a.dtype], outs["fp32"]))
        per = [psnr_u8(x, y, np) for x, y in pairs]
        res["fidelity"] = {"frames": len(pairs), "vs": "Engine fp32 (same weights, same windows), uint8 RGB",
                           "dtype": a.dtype, "psnr_db_mean": round(sum(per) / len(per), 2), "psnr_db_min": min(per),
                           "max_abs_diff": int(max(int(np.abs(x.astype(np.int16) - y).max()) for x, y in pairs)),
                           "seconds": round(time.perf_counter() - t, 2)}
    res["process_s"] = round(time.perf_counter() - T_START, 3)
    tmp = f"{a.json}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(res, f, indent=2, default=str)
    os.replace(tmp, a.json)
    print(json.dumps({k2: res.get(k2) for k2 in ("first_frame_s", "total_s", "steady_fps", "import_s")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
