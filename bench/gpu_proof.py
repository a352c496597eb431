"""One command that proves the kernels and the models on a fresh GPU machine and fits one 10-minute device call.

    python3 bench/gpu_proof.py --out /tmp/proof --archive $OUT/proof.tgz \
        --basicvsr-weights build/device/BasicVSR_REDS4_fp16.pth \
        --clip build/device/bbb_540p.mp4 --lr-npz build/device/bbb_lr_180x320.npz
    python3 bench/gpu_proof.py --smoke --out /tmp/proof      # CPU, tiny shapes, < 1 minute (CI)

Sections, in order, each under a share of ``--budget`` seconds (default 460: done within 8 minutes) and each
written when it finishes (CSV/JSON through a temporary file and a rename, so nothing half-written looks complete;
``log.txt`` grows as it goes):
  env        device, versions, ``vsr-engine info``'s backend lines, measured copy GB/s and matmul TFLOP/s (fp16/bf16);
  tests      the GPU op tests (``pytest tests/ops -m gpu``, fp32 references with TF32 off) -> tests.txt;
  ops        per-op forward and forward+backward, eager vs triton vs cuda vs cupy at the real shapes (64 channels at
             180x320 and 540x960, the pixel-shuffle tail at 2x and 4x), fp16 and bf16 -> ops.csv (GB/s against
             the measured copy bandwidth, TFLOP/s against the measured matmul peak);
  models     BasicVSR and RealBasicVSR x4 at 180x320 and 540x960, a window of --frames (>= 30) frames, median of 3
             timed windows after a warm-up window: eager fp32 (the reference, 1 window), torch.compile fp16 (one
             bounded compile per shape), the fast step (vsr_engine.fast, what the Engine runs: fp16, fp16 with fp32
             SPyNet, bf16), the module's own forward with the ops' kernels at 540x960 -> models.csv (with the first
             window's time and the CUDA-graph status), plus the fidelity against the fp32 output on uniform-random
             and (with --lr-npz) real frames -> fidelity.csv; the fast step's channels-last kernels -> fastops.csv;
  engine     the streaming Engine on in-memory frames end to end (fps after one warm-up run; the first run's time
             too) and its peak memory for 100 vs 1000 small frames -> engine.json;
  coldstart  the Engine as a user starts it: bench/engine_start.py in a fresh process (BasicVSR fp16, 150 in-memory
             180x320 frames, the --lr-npz real frames when given), first with every kernel cache empty (fresh
             VSR_ENGINE_HOME, TRITON_CACHE_DIR, CUPY_CACHE_DIR, CUDA_CACHE_PATH, TORCH_EXTENSIONS_DIR, ...), then
             again on the same caches: seconds from ``Engine(...)`` to the first frame, total, steady fps, what each
             run added to the caches (a warm run that adds files recompiles something every process); then, if the
             budget allows, scripts/warmup.py on fresh caches followed by the Engine; with --lr-npz also the
             Engine's fp16-vs-fp32 fidelity on the real frames -> coldstart.json;
  file       file to file, 540p -> 4K: the --clip decoded, x4 through the Engine (fp16), libx264 on host threads with
             the preset that bench/results/host_budget.json says keeps up on this machine's cores -> file.json (fps,
             first-frame latency, the run summary's stages and their share of the wall time); skipped (recorded,
             with the reason) without PyAV or without a clip;
  profile    torch.profiler over one 30-frame window at 540x960 fp16 of ``model_step`` (BasicVSR): top kernels
             and top ops with their share of the CUDA time, grouped (layout conversions, convolutions,
             elementwise, vsr_engine kernels, ...) -> profile.json, profile.csv, profile.txt;
  choice     backend_choice.json: the automatic backend order the measured ops rows imply (copy it over
             vsr_engine/ops/backend_choice.json to adopt it).
No network, weights only from the files given, PyAV only in the file section (skipped when missing). A section that
fails or runs out of budget is recorded as such in summary.json and the next one still runs. After every section
everything under --out is packed into one archive (--archive, default ``<out>/../proof.tgz``), so that a single
file brings all of it back even when the run is cut short.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import traceback
from typing import Callable, Dict, List

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

import torch  # noqa: E402

from vsr_engine import ops  # noqa: E402
from vsr_engine.ops import _backend, _choice  # noqa: E402
from common import median_ms as time_ms  # noqa: E402  (bench/common.py, beside this script)

SECTIONS = ("env", "tests", "ops", "models", "engine", "coldstart", "file", "profile", "choice")
# share of the budget each section may use (the rest rolls over to later sections); at the default 460 s: tests 161,
# ops 32, models 115, engine 18, coldstart 64, file 32, profile 23 (the first GPU run took 154 s for the tests,
# 26 s for ops and about 22 s to compile at the Engine's first run)
SHARE = {"env": 0.02, "tests": 0.35, "ops": 0.07, "models": 0.25, "engine": 0.04, "coldstart": 0.14, "file": 0.07,
         "profile": 0.05, "choice": 0.01}
DEVICE_DIR = os.path.join(REPO, "build", "device")  # scripts/make_device_clip.py writes the carried inputs here
HOST_BUDGET = os.path.join(HERE, "results", "host_budget.json")
X264_ORDER = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")


def model_step(model, dtype):
    """The model step the profile section measures: a callable (N, T, 3, H, W) -> (N, T, 3, 4H, 4W) on the model's
    device: the fast step (``vsr_engine.fast``: channels-last, fused epilogues, CUDA graphs) the Engine runs, or the
    model itself cast to ``dtype`` for models without one."""
    from vsr_engine.fast import accelerate
    from vsr_engine.window import unwrap
    from vsr_engine.fast import supported
    m = model.to(dtype)
    core, _ = unwrap(m)
    return accelerate(m, dtype=dtype) if core is not None and supported(core) else m


# ---------------------------------------------------------------------------------------------------- output
class Out:
    def __init__(self, path: str):
        os.makedirs(path, exist_ok=True)
        self.path = path
        self.log_f = open(os.path.join(path, "log.txt"), "a")

    def log(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        self.log_f.write(line + "\n")
        self.log_f.flush()

    def _atomic(self, name: str, write: Callable) -> None:
        dst = os.path.join(self.path, name)
        tmp = f"{dst}.tmp{os.getpid()}"
        with open(tmp, "w", newline="") as f:
            write(f)
        os.replace(tmp, dst)

    def json(self, name: str, obj) -> None:
        self._atomic(name, lambda f: json.dump(obj, f, indent=2, default=str))

    def text(self, name: str, text: str) -> None:
        self._atomic(name, lambda f: f.write(text))

    def archive(self, path: str) -> None:
        """Everything under this folder into one .tgz at ``path`` (through a temporary file and a rename)."""
        import tarfile
        path = os.path.abspath(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"

        def keep(ti):
            full = os.path.join(os.path.dirname(os.path.abspath(self.path)), ti.name)
            if os.path.abspath(full) in (path, tmp) or re.search(r"\.tmp\d+$", ti.name):
                return None
            return ti
        with tarfile.open(tmp, "w:gz") as tf:
            tf.add(self.path, arcname=os.path.basename(os.path.abspath(self.path)), filter=keep)
        os.replace(tmp, path)

    def csv(self, name: str, rows: List[dict]) -> None:
        keys: List[str] = []
        for r in rows:
            keys += [k for k in r if k not in keys]

        def w(f):
            wr = csv.DictWriter(f, fieldnames=keys)
            wr.writeheader()
            wr.writerows(rows)
        self._atomic(name, w)


# ---------------------------------------------------------------------------------------------------- timing
def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def copy_gbps(dev: torch.device, n: int) -> float:
    src = torch.empty(n, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), dev, 10, 2)
    return 2 * n / (ms * 1e-3) / 1e9


def matmul_tflops(dev: torch.device, dt: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=dev, dtype=dt)
    b = torch.randn(n, n, device=dev, dtype=dt)
    ms = time_ms(lambda: a @ b, dev, 5, 2)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


# ---------------------------------------------------------------------------------------------------- helpers
# every place the package (or torch/triton/cupy/the driver under it) keeps compiled code, as environment
# variables: the coldstart section points each at a folder of its own for its children
CACHE_VARS = {"VSR_ENGINE_HOME": "vsr_engine", "TRITON_CACHE_DIR": "triton_cache", "TRITON_HOME": "triton_home",
              "CUPY_CACHE_DIR": "cupy", "CUDA_CACHE_PATH": "cuda_driver", "TORCH_EXTENSIONS_DIR": "torch_extensions",
              "TORCHINDUCTOR_CACHE_DIR": "inductor", "XDG_CACHE_HOME": "xdg_cache"}


def _census(base: str) -> Dict[str, Dict[str, int]]:
    """{cache folder: {relative file path: size}} under ``base`` (one folder per CACHE_VARS entry)."""
    out: Dict[str, Dict[str, int]] = {}
    for sub in CACHE_VARS.values():
        root, files = os.path.join(base, sub), {}
        for dp, _, fs in os.walk(root):
            for f in fs:
                p = os.path.join(dp, f)
                try:
                    files[os.path.relpath(p, root)] = os.path.getsize(p)
                except OSError:
                    pass
        out[sub] = files
    return out


def _census_diff(before, after) -> Dict[str, dict]:
    """What a run added (or rewrote with another size) in each cache folder."""
    d = {}
    for sub, files in after.items():
        new = [p for p, sz in files.items() if before.get(sub, {}).get(p) != sz]
        if new:
            d[sub] = {"files": len(new), "mb": round(sum(files[p] for p in new) / 1e6, 2),
                      "examples": sorted(new)[:6]}
    return d


def choose_preset(table_path: str, cores: int, fps: float, reserve: int = 2):
    """The slowest (best-compressing) libx264 preset that bench/results/host_budget.json says keeps up with ``fps``
    at 4K on ``cores`` host cores (``reserve`` left for decode, staging and the driver thread; colour conversion
    on the device); the fastest preset if none does. -> (preset, reason)."""
    with open(table_path) as f:
        rows = json.load(f)["rows"]
    usable = max(1, cores - reserve)
    rank = {p: i for i, p in enumerate(X264_ORDER)}
    need = {r["preset"]: r["core_ms_per_frame"] * fps / 1000.0 for r in rows}
    fits = [p for p, c in need.items() if c <= usable]
    if fits:
        pick = max(fits, key=lambda p: rank.get(p, -1))
        why = (f"slowest preset whose host cost ({need[pick]:.1f} cores at {fps:g} fps, 4K, from "
               f"{os.path.relpath(table_path, REPO)}) fits {usable} of {cores} cores")
    else:
        pick = min(need, key=need.get)
        why = (f"no preset keeps up with {fps:g} fps on {usable} of {cores} cores "
               f"({os.path.relpath(table_path, REPO)}): the fastest, {pick} ({need[pick]:.1f} cores)")
    return pick, why


def _probe(path: str) -> dict:
    import av
    with av.open(path) as c:
        s = c.streams.video[0]
        n = s.frames or sum(1 for _ in c.demux(s) if _.size)
        return {"width": s.codec_context.width, "height": s.codec_context.height, "codec": s.codec_context.name,
                "frames": int(n), "fps": float(s.average_rate) if s.average_rate else None}


def _synthetic_clip(path: str, n: int = 8, h: int = 48, w: int = 64) -> str:
    """Smoke only: a tiny moving-gradient H.264 clip (the real clip comes from scripts/make_device_clip.py)."""
    import av
    import numpy as np
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(path, "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            img = np.stack([(xx * 4 + i * 8) % 256, (yy * 5 + i * 3) % 256, ((xx + yy) * 2) % 256], -1)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


# kernel (or op) name -> group, first match wins (the diagnosis of 2026-12-04 used these groups)
PROFILE_GROUPS = (
    ("layout conversion (NCHW<->NHWC)", r"nchwToNhwc|nhwcToNchw|nchw_?to_?nhwc|nhwc_?to_?nchw|convertTensor"),
    ("vsr_engine kernels (triton/csrc)", r"^_\w*kernel|(^|[\s:])(fwd|bwd|dw|dw_bwd_[wx]|bwd_feat|bwd_wt|fused|probe)"
                                         r"_kernel|flow_warp|dwpw|pixel_shuffle|meta_upscale|clean_step|bias_act"
                                         r"|dyn_upsample"),
    ("convolution", r"conv|implicit_gemm|implicit_convolve|fprop|dgrad|wgrad|winograd|xmma|cutlass|cudnn"),
    ("gemm", r"gemm|cublas|matmul|nvjet|aten::mm|aten::addmm|aten::bmm"),
    ("memcpy/memset", r"memcpy|memset|aten::copy_|aten::to\b|aten::_to_copy"),
    ("elementwise/reduce (torch)", r"elementwise|vectorized|unrolled|reduce|CatArray|index|fill|upsample|grid_sampler"
                                   r"|aten::add|aten::mul|aten::relu|aten::leaky_relu|aten::clamp|aten::cat|aten::sub"
                                   r"|aten::div|aten::grid_sampler|aten::pixel_shuffle|aten::upsample"),
)


def _group(name: str) -> str:
    for g, rx in PROFILE_GROUPS:
        if g.startswith("vsr_engine") and name.startswith("aten::"):  # aten::pixel_shuffle is torch's
            continue
        if re.search(rx, name, re.IGNORECASE if "aten::" not in rx else 0):
            return g
    return "other"


def profile_rows(ka, cuda: bool, top: int):
    """(CSV rows, summary) from ``prof.key_averages()``: on CUDA the kernels (device events, their time) and the
    ops (CPU events, the device time of the kernels each launched itself), each with its share of the total
    kernel time, grouped by PROFILE_GROUPS; on a CPU the ops by self CPU time."""
    from torch.autograd import DeviceType

    def dev_t(e):
        for attr in ("self_device_time_total", "self_cuda_time_total"):
            v = getattr(e, attr, None)
            if v is not None:
                return float(v)
        return 0.0

    def row(level, e, t, total):
        return {"level": level, "name": e.key, "group": _group(e.key), "calls": int(e.count),
                "ms": round(t / 1e3, 4), "share": round(t / total, 4) if total else None}

    info: Dict[str, object] = {}
    if cuda:
        kern = [(e, dev_t(e)) for e in ka if getattr(e, "device_type", None) == DeviceType.CUDA]
        ops_ = [(e, dev_t(e)) for e in ka if getattr(e, "device_type", None) != DeviceType.CUDA and dev_t(e) > 0]
        total = sum(t for _, t in kern) or sum(t for _, t in ops_)  # no device rows: the ops' device time
        kern.sort(key=lambda p: -p[1])
        ops_.sort(key=lambda p: -p[1])
        krows = [row("kernel", e, t, total) for e, t in kern]
        orows = [row("op", e, t, total) for e, t in ops_]
        launches = [e for e in ka if re.search(r"cudaLaunch|cuLaunch|cudaGraphLaunch", e.key)]
        info.update(time_kind="CUDA kernel time", total_ms=round(total / 1e3, 2),
                    kernels_launched=int(sum(e.count for e, _ in kern if not re.search(r"memcpy|memset", e.key,
                                                                                       re.I))),
                    launch_api_calls={e.key: int(e.count) for e in launches})
        base = krows or orows
        info["top_kernels"] = krows[:top]
        info["top_ops"] = orows[:top]
        rows = krows[:top] + orows[:top]
    else:
        cpu = [(e, float(e.self_cpu_time_total)) for e in ka]
        total = sum(t for _, t in cpu)
        cpu.sort(key=lambda p: -p[1])
        base = [row("cpu op", e, t, total) for e, t in cpu]
        info.update(time_kind="CPU self time (no CUDA device)", total_ms=round(total / 1e3, 2), top_ops=base[:top])
        rows = base[:top]
    groups: Dict[str, float] = {}
    for r in base:
        groups[r["group"]] = groups.get(r["group"], 0.0) + (r["share"] or 0.0)
    info["groups"] = [{"group": g, "share": round(v, 4)} for g, v in sorted(groups.items(), key=lambda p: -p[1])]
    for lvl in ("kernel", "op", "cpu op"):
        for i, r in enumerate(r for r in rows if r["level"] == lvl):
            r["rank"] = i + 1
    return rows, info


# ---------------------------------------------------------------------------------------------------- sections
class Proof:
    def __init__(self, a):
        self.a = a
        self.out = Out(a.out)
        self.dev = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
        self.smoke = a.smoke
        self.t0 = time.perf_counter()
        self.summary: Dict[str, dict] = {}
        self.archive_path = os.path.abspath(a.archive or os.path.join(
            os.path.dirname(os.path.abspath(a.out)), "proof.tgz"))
        self.env: Dict[str, object] = {}
        self.op_rows: List[dict] = []
        self.dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16}
        if self.smoke:  # fp16 convolutions are slow or missing on CPU: bf16 stands for both
            self.dtypes = {"bf16": torch.bfloat16}

    def left(self) -> float:
        return self.a.budget - (time.perf_counter() - self.t0)

    def run(self) -> int:
        done = 0.0
        for name in SECTIONS:
            if name in self.a.skip:
                self.summary[name] = {"status": "skipped (--skip)"}
                self._checkpoint()
                continue
            share = SHARE[name] * self.a.budget + max(0.0, done)
            if self.left() < 5 and name != "choice":  # choice only reads the rows: always cheap
                self.summary[name] = {"status": "not run: budget spent"}
                self.out.log(f"== {name}: not run, budget spent")
                self._checkpoint()
                continue
            self.out.log(f"== {name} (up to {max(0.0, min(share, self.left())):.0f} s)")
            t = time.perf_counter()
            try:
                info = getattr(self, f"sec_{name}")(deadline=t + min(share, self.left())) or {}
                self.summary[name] = {"status": "ok", **info}
            except Exception as e:
                self.summary[name] = {"status": f"failed: {type(e).__name__}: {e}"}
                self.out.log(f"{name} failed:\n{traceback.format_exc()}")
            el = time.perf_counter() - t
            self.summary[name]["seconds"] = round(el, 1)
            if str(self.summary[name]["status"]).startswith("skipped"):
                self.out.log(f"{name}: {self.summary[name]['status']}")
            done = share - el  # unused time rolls over
            self._checkpoint()
        bad = [k for k, v in self.summary.items() if str(v.get("status", "")).startswith("failed")]
        self.out.log(f"done in {time.perf_counter() - self.t0:.0f} s; failed sections: {bad or 'none'}; "
                     f"archive: {self.archive_path}")
        self._checkpoint()
        return 1 if bad else 0

    def _checkpoint(self) -> None:
        """summary.json, then everything under --out into the archive (after every section: a run cut short
        still brings back what it finished)."""
        self.out.json("summary.json", {"smoke": self.smoke, "elapsed_s": round(time.perf_counter() - self.t0, 1),
                                       "budget_s": self.a.budget, "archive": self.archive_path,
                                       "sections": self.summary})
        try:
            self.out.archive(self.archive_path)
        except Exception as e:  # never lose the run over the archive; the files are still under --out
            self.out.log(f"archive {self.archive_path} failed: {type(e).__name__}: {e}")

    # -- env ------------------------------------------------------------------------------------------------
    def sec_env(self, deadline):
        import platform
        e = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
             "device": torch.cuda.get_device_name(0) if self.dev.type == "cuda" else platform.processor() or "cpu",
             "triton": _backend.TRITON_WHY, "interpret": _backend.INTERPRET, "smoke": self.smoke}
        try:
            import cupy
            e["cupy"] = cupy.__version__
        except Exception as ex:
            e["cupy"] = f"not importable ({type(ex).__name__})"
        e["backends"] = ops.format_backend_info()
        self.out.log("backends:\n" + e["backends"])
        n = (1 << 20) if self.smoke else (1 << 30)
        e["copy_gbps"] = copy_gbps(self.dev, n)
        mm = 128 if self.smoke else 8192
        for k, dt in self.dtypes.items():
            e[f"matmul_tflops_{k}"] = matmul_tflops(self.dev, dt, mm)
        self.out.log(f"copy {e['copy_gbps']:.1f} GB/s; matmul " +
                     ", ".join(f"{k} {e[f'matmul_tflops_{k}']:.1f} TFLOP/s" for k in self.dtypes))
        self.env = e
        self.out.json("env.json", e)
        return {"copy_gbps": round(e["copy_gbps"], 1)}

    # -- tests ----------------------------------------------------------------------------------------------
    def sec_tests(self, deadline):
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
               ] + (["tests/ops/test_pixel_shuffle.py"] if self.smoke else ["tests/ops", "tests/test_fast.py"])
        # smoke: the GPU tests skip
        timeout = max(10.0, deadline - time.perf_counter())
        try:
            res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
            text, rc = res.stdout + res.stderr, res.returncode
        except subprocess.TimeoutExpired as ex:
            text = (ex.stdout or b"").decode(errors="replace") if isinstance(ex.stdout, bytes) else (ex.stdout or "")
            text += f"\nTIMEOUT after {timeout:.0f} s"
            rc = "timeout"
        with open(os.path.join(self.out.path, "tests.txt"), "w") as f:
            f.write(text)
        tail = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["?"]
        self.out.log(f"op tests: rc={rc}: {tail[0]}")
        if rc not in (0, 5):  # 5: nothing collected/selected
            raise RuntimeError(f"GPU op tests: rc={rc}: {tail[0]}")
        return {"result": tail[0]}

    # -- ops ------------------------------------------------------------------------------------------------
    def _cases(self):
        """(op, case, make(dtype) -> inputs, kernel, eager, grad idx, bytes(inputs, out), flops)."""
        from vsr_engine.ops import (clean_step, clean_step_ref, dwpw_conv2d, dwpw_conv2d_ref, flow_warp, flow_warp_ref,
                                    meta_upscale, meta_upscale_ref, pixel_shuffle_lrelu, pixel_shuffle_lrelu_ref)
        from vsr_engine.ops import dyn_upsample, dyn_upsample_ref
        from vsr_engine.ops import deform_conv2d, deform_conv2d_ref
        dev = self.dev
        sizes = [(12, 16)] if self.smoke else [(180, 320), (540, 960)]
        ch = 8 if self.smoke else 64

        def rnd(*s, dt):
            return torch.randn(*s, device=dev, dtype=dt)
        cases = []
        for h, w in sizes:
            cases.append(("flow_warp", f"{ch}ch {h}x{w}",
                          lambda dt, h=h, w=w: [rnd(1, ch, h, w, dt=dt), rnd(1, h, w, 2, dt=dt) * 3],
                          lambda x, f: flow_warp(x, f), lambda x, f: flow_warp_ref(x, f), (0, 1), 0))
            cases.append(("dwpw_conv2d", f"{ch}->{ch} k3 lrelu {h}x{w}",
                          lambda dt, h=h, w=w: [rnd(1, ch, h, w, dt=dt), rnd(ch, 1, 3, 3, dt=dt) * 0.3,
                                                rnd(ch, dt=dt), rnd(ch, ch, 1, 1, dt=dt) / 8, rnd(ch, dt=dt)],
                          lambda *t: dwpw_conv2d(*t, activation="lrelu"),
                          lambda *t: dwpw_conv2d_ref(*t, "lrelu"), (0, 1, 2, 3, 4), 2 * ch * ch * h * w))
            sc = 2.0 if self.smoke else 2.3  # x2.3: ~700 offset classes, one program each (slow when interpreted)
            cases.append(("meta_upscale", f"{ch}ch x{sc} {h}x{w}",
                          lambda dt, h=h, w=w: [rnd(1, ch, h, w, dt=dt), rnd(256, 3, dt=dt), rnd(256, dt=dt) * 0.1,
                                                rnd(9 * ch * 3, 256, dt=dt) / 16, rnd(9 * ch * 3, dt=dt) * 0.1],
                          lambda f, *p, sc=sc: meta_upscale(f, sc, *p),
                          lambda f, *p, sc=sc: meta_upscale_ref(f, sc, *p),
                          (0, 1, 2, 3, 4), 2 * 9 * ch * 3 * int(sc * h) * int(sc * w)))
        for h, w in sizes:  # TDAN's alignment: 64 channels, 8 deformable groups, 3x3, offsets of a few pixels
            cases.append(("deform_conv2d", f"{ch}->{ch} k3 dg8 {h}x{w}",
                          lambda dt, h=h, w=w: [rnd(1, ch, h, w, dt=dt), rnd(1, 8 * 18, h, w, dt=dt) * 2,
                                                rnd(ch, ch, 3, 3, dt=dt) / 24, rnd(ch, dt=dt)],
                          lambda x, o, w_, b: deform_conv2d(x, o, w_, b, padding=1),
                          lambda x, o, w_, b: deform_conv2d_ref(x, o, w_, b, padding=1), (0, 1, 2, 3),
                          2 * 9 * ch * ch * h * w))
        for (h, w), tag in zip(sizes if self.smoke else [(180, 320), (360, 640)], ("tail 2x", "tail 4x")):
            cases.append(("pixel_shuffle", f"{ch}ch {tag} {h}x{w}->{2 * h}x{2 * w} +bias lrelu",
                          lambda dt, h=h, w=w: [rnd(1, 4 * ch, h, w, dt=dt), rnd(4 * ch, dt=dt)],
                          lambda x, b: pixel_shuffle_lrelu(x, 2, b), lambda x, b: pixel_shuffle_lrelu_ref(x, 2, b),
                          (0, 1), 0))
        for h, w in sizes:  # DUF's output stage: x4 of a 180x320 (720p out) / 540x960 frame, raw logits + residual
            cases.append(("dyn_upsample", f"3ch x4 {h}x{w} (DUF)",
                          lambda dt, h=h, w=w: [rnd(1, 3, h, w, dt=dt).abs(), rnd(1, 400, h, w, dt=dt) * 2,
                                                rnd(1, 48, h, w, dt=dt) * 0.1],
                          lambda x, f, r: dyn_upsample(x, f, r, 4), lambda x, f, r: dyn_upsample_ref(x, f, r, 4),
                          (0, 1, 2), 2 * 25 * 16 * 3 * h * w))
        for h, w in sizes:
            cases.append(("clean_step", f"3ch {h}x{w}", lambda dt, h=h, w=w: [rnd(1, 3, h, w, dt=dt).abs(),
                                                                               rnd(1, 3, h, w, dt=dt) * 0.1],
                          lambda x, r: clean_step(x, r), lambda x, r: clean_step_ref(x, r), (0, 1), 0))
        return cases

    def sec_ops(self, deadline):
        copy_bw = self.env.get("copy_gbps", float("nan"))
        rows = []
        iters, warm = (2, 1) if self.smoke else (20, 3)
        skipped = 0
        for op, case, make, kernel, eager, gidx, flops in self._cases():
            for dname, dt in self.dtypes.items():
                for impl in ("eager", "triton", "cuda", "cupy"):
                    if time.perf_counter() > deadline:
                        skipped += 1
                        continue
                    if impl != "eager" and impl not in _backend.IMPLEMENTS.get(op, _backend.BACKENDS):
                        rows.append({"op": op, "case": case, "dtype": dname, "impl": impl, "pass": "-",
                                     "ms": None, "note": "not implemented for this op"})
                        continue
                    if impl != "eager":
                        ok, why = _backend._USABLE[impl](self.dev.type)
                        if not ok:
                            rows.append({"op": op, "case": case, "dtype": dname, "impl": impl, "pass": "-",
                                         "ms": None, "note": f"not live: {why}"})
                            continue
                    if impl == "eager" and op == "meta_upscale" and "540x960" in case:
                        rows.append({"op": op, "case": case, "dtype": dname, "impl": impl, "pass": "-", "ms": None,
                                     "note": "literal reference too large (per-pixel weights)"})
                        continue
                    for ps in ("fwd", "fwd+bwd"):
                        rows.append(self._op_row(op, case, make, kernel, eager, gidx, flops, dname, dt, impl, ps,
                                                 iters, warm, copy_bw))
        self.op_rows = rows
        self.out.csv("ops.csv", rows)
        fast_rows = self._fast_ops(deadline)
        return {"rows": len(rows), "cut_by_budget": skipped, "fast_op_rows": fast_rows}

    def _fast_ops(self, deadline) -> int:
        """The fast step's channels-last kernels (bench/bench_{bias_act,warp_nhwc,shuffle_nhwc}.py cases), forward,
        eager vs triton, fp16 -> fastops.csv (GB/s against the measured copy bandwidth)."""
        import importlib
        import common
        rows = []
        iters, warm = (2, 1) if self.smoke else (30, 5)
        env = common.env_info(self.dev)
        for name in ("bench_bias_act", "bench_warp_nhwc", "bench_shuffle_nhwc"):
            mod = importlib.import_module(name)
            for op, case, shape, make, impls, mb in mod.cases(self.dev, torch.float16, self.smoke):
                if time.perf_counter() > deadline:
                    break
                for r in common.run_plain_case(op, case, shape, torch.float16, make, impls, mb, self.dev, env,
                                               iters, warm):
                    d = r.as_csv()
                    rows.append({k: d[k] for k in ("op", "case", "dtype", "impl", "median_ms", "speedup_vs_eager",
                                                   "min_bytes", "gbps", "copy_gbps", "roofline_frac")})
                    self.out.log(f"{op:13s} {case:28s} fp16 {r.impl:6s} fwd     {r.median_ms:9.4f} ms "
                                 f"{r.gbps:8.1f} GB/s ({100 * r.roofline_frac:.0f}% of copy)")
        self.out.csv("fastops.csv", rows)
        return len(rows)

    def _op_row(self, op, case, make, kernel, eager, gidx, flops, dname, dt, impl, ps, iters, warm, copy_bw):
        row = {"op": op, "case": case, "dtype": dname, "impl": impl, "pass": ps}
        try:
            inputs = make(dt)
            row["numel"] = int(inputs[0].numel())       # the main input's size: the choice table's size buckets
            fn = eager if impl == "eager" else kernel
            if ps == "fwd":
                def call():
                    with torch.no_grad(), ops.use_backend(None if impl == "eager" else impl, op=op):
                        return fn(*inputs)
            else:
                inputs = [t.requires_grad_() if i in gidx else t for i, t in enumerate(inputs)]

                def call():
                    with ops.use_backend(None if impl == "eager" else impl, op=op):
                        out = fn(*inputs)
                    outs = [o for o in (out if isinstance(out, (tuple, list)) else (out,)) if o.requires_grad]
                    torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
                    for i in gidx:
                        inputs[i].grad = None
            with torch.no_grad(), ops.use_backend(None if impl == "eager" else impl, op=op):
                outs = fn(*[t.detach() for t in inputs])
            outs = outs if isinstance(outs, (tuple, list)) else (outs,)
            nbytes = sum(t.numel() * t.element_size() for t in list(inputs) + list(outs) if isinstance(t, torch.Tensor))
            ms = time_ms(call, self.dev, iters, warm)
            row.update(ms=round(ms, 4), min_bytes=nbytes)
            if ps == "fwd":
                gbps = nbytes / (ms * 1e-3) / 1e9
                row.update(gbps=round(gbps, 1), frac_copy=round(gbps / copy_bw, 3) if copy_bw == copy_bw else None)
                if flops:
                    tf = flops / (ms * 1e-3) / 1e12
                    peak = self.env.get(f"matmul_tflops_{dname}")
                    row.update(tflops=round(tf, 2), frac_matmul=round(tf / peak, 3) if peak else None)
        except Exception as e:
            row.update(ms=None, note=f"failed: {type(e).__name__}: {str(e)[:200]}")
        self.out.log(f"{op:13s} {row['case']:34s} {dname} {impl:6s} {ps:7s} "
                     + (f"{row['ms']:9.4f} ms" if row.get("ms") is not None else row.get("note", "")))
        return row

    # -- models ---------------------------------------------------------------------------------------------
    def _model(self, name: str):
        from vsr_engine import load_model
        path = self.a.basicvsr_weights if name == "basicvsr" else self.a.realbasicvsr_weights
        if path:
            return load_model(name, weights=path).eval(), os.path.basename(path)
        torch.manual_seed(0)
        return load_model(name, weights=False).eval(), "random init (seed 0; no weights file given)"

    def sec_models(self, deadline):
        """Model step rows: one 30-frame window, median of ``reps`` timed windows after a warm-up window (the
        fast step's first window also captures its CUDA graphs). ``vsr_engine`` rows run ``vsr_engine.fast``
        (what the Engine runs on CUDA); ``plain ops`` is the module's own forward with the ops' kernels (NCHW)."""
        from vsr_engine.fast import accelerate
        rows, fid = [], []
        frames = 3 if self.smoke else max(30, self.a.frames)
        sizes = [(16, 16)] if self.smoke else [(180, 320), (540, 960)]
        reps = 1 if self.smoke else 3
        masters = {}
        f16, b16, f32 = torch.float16, torch.bfloat16, torch.float32
        # (label, activation dtype, kind, SPyNet dtype); kind: eager | compile | fast | plain
        variants = [("eager fp32", f32, "eager", f32), ("torch.compile fp16", f16, "compile", f16),
                    ("vsr_engine fp16", f16, "fast", f16), ("vsr_engine fp16, SPyNet fp32 (tf32)", f16, "fast", f32),
                    ("vsr_engine bf16", b16, "fast", b16), ("plain ops fp16 (NCHW module)", f16, "plain", f16)]
        if self.smoke:
            variants = [v for v in variants if v[2] != "compile"] + [
                ("torch.compile bf16 (eager backend)", b16, "compile", b16)]
        real = self._real_frames()
        for h, w in sizes:  # the small size first: if the budget runs out, the 540x960 rows are the ones missing
            for name in ("basicvsr", "realbasicvsr"):
                if name not in masters:
                    masters[name] = self._model(name)
                master, wdesc = masters[name]
                g = torch.Generator().manual_seed(0)
                x32 = torch.rand(1, frames, 3, h, w, generator=g).to(self.dev)
                inputs = [("uniform-random frames", x32)]
                if real is not None and (h, w) == tuple(real.shape[-2:]):
                    inputs.append(("real frames", real.to(self.dev)))
                refs = {}
                for desc, dt, kind, fdt in variants:
                    # budget: RealBasicVSR (random init unless carried) gets eager fp32 + the fast fp16 step; the
                    # plain NCHW module only at 540x960 (the first GPU run's comparison point)
                    if not self.smoke and ((name != "basicvsr" and desc not in ("eager fp32", "vsr_engine fp16"))
                                           or (kind == "plain" and (h, w) != (540, 960))):
                        continue
                    row = {"model": name, "weights": wdesc, "size": f"{h}x{w}", "frames": frames, "variant": desc}
                    if time.perf_counter() > deadline:
                        row["note"] = "not run: section budget spent"
                        rows.append(row)
                        continue
                    if kind == "compile" and not self.smoke and (
                            (name != "basicvsr" and not self.a.compile_all)
                            or deadline - time.perf_counter() < self.a.compile_reserve):
                        row["note"] = ("not run: one bounded compile per shape (BasicVSR; --compile-all for more)"
                                       if name != "basicvsr" else "not run: less than --compile-reserve s left")
                        rows.append(row)
                        continue
                    try:
                        m = copy.deepcopy(master).to(self.dev, dt)
                        if kind == "compile":
                            m = self._compiled(m)
                            t = time.perf_counter()
                            with torch.inference_mode():
                                m(x32[:, :3].to(dt))  # the one compile for this shape (3 frames: same cells)
                            sync(self.dev)
                            row["compile_s"] = round(time.perf_counter() - t, 1)
                        if kind == "fast":
                            core = m.basicvsr if hasattr(m, "basicvsr") else m
                            core.spynet.to(fdt)
                            allow = torch.backends.cudnn.allow_tf32
                            torch.backends.cudnn.allow_tf32 = fdt == f32  # the Engine's default for fp32 SPyNet
                            fn = accelerate(m, dtype=dt)
                        else:
                            fn = m
                        backend_ctx = ops.use_backend("torch") if kind in ("eager", "compile") or self.smoke else _null()
                        try:
                            with torch.inference_mode(), backend_ctx:
                                xin = x32.to(dt)
                                t = time.perf_counter()
                                out = fn(xin).float()  # warm-up (graph capture, cuDNN autotuning, kernel compiles)
                                sync(self.dev)
                                row["first_window_ms"] = round((time.perf_counter() - t) * 1e3, 1)
                                ts = []
                                for _ in range(1 if kind == "eager" else reps):  # eager fp32: the reference
                                    t = time.perf_counter()
                                    fn(xin)
                                    sync(self.dev)
                                    ts.append((time.perf_counter() - t) * 1e3)
                                ms = sorted(ts)[len(ts) // 2]
                                outs = {"uniform-random frames": out}
                                for iname, xi in inputs[1:]:
                                    outs[iname] = fn(xi.to(dt)).float()
                        finally:
                            if kind == "fast":
                                torch.backends.cudnn.allow_tf32 = allow
                        row.update(ms_per_window=round(ms, 1), fps=round(frames / (ms * 1e-3), 2),
                                   timed_windows=len(ts), ms_all=" ".join(f"{v:.1f}" for v in ts))
                        if kind == "fast" and hasattr(fn, "fast"):
                            st = fn.fast.graph_stats()
                            row["graphs"] = ("failed: " + "; ".join(f"{k}: {v['failed']}" for k, v in st.items()
                                                                    if v["failed"])) if any(
                                v["failed"] for v in st.values()) else f"{sum(v['captures'] for v in st.values())} captured"
                        if self.dev.type == "cuda":
                            row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
                            torch.cuda.reset_peak_memory_stats()
                        for iname, o in outs.items():
                            if kind == "eager" and dt == f32:
                                refs[iname] = o
                            elif iname in refs:
                                d = (o.clamp(0, 1) - refs[iname].clamp(0, 1))
                                mse = d.square().mean().item()
                                fid.append({"model": name, "size": f"{h}x{w}", "variant": desc, "input": iname,
                                            "psnr_vs_fp32_db": round(10 * math.log10(1 / max(mse, 1e-20)), 2),
                                            "max_abs_diff": round(d.abs().max().item(), 5)})
                        del m, out, outs, fn
                    except Exception as e:
                        row["note"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
                    self.out.log(f"{name} {h}x{w} {desc}: " + (f"{row['ms_per_window']} ms/window, {row['fps']} fps"
                                                              if "ms_per_window" in row else row.get("note", "")))
                    rows.append(row)
                    if self.dev.type == "cuda":
                        torch.cuda.empty_cache()
                self.out.csv("models.csv", rows)
                self.out.csv("fidelity.csv", fid)
        return {"rows": len(rows)}

    def _real_frames(self):
        """(1, T, 3, H, W) float real frames from ``--real-frames`` (.npz with ``frames`` uint8 (T, H, W, 3)), or None."""
        path = getattr(self.a, "real_frames", None) or getattr(self.a, "lr_npz", None)
        if not path or not os.path.isfile(path):
            return None
        import numpy as np
        with np.load(path) as z:
            arr = z["frames"]
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)

    def _compiled(self, m):
        kw = {"backend": "eager" if self.smoke else "inductor", "dynamic": False}
        bv = m.basicvsr if hasattr(m, "basicvsr") else m
        cells = ("upsample",) if self.smoke else ("spynet", "backward_trunk", "forward_trunk", "upsample")
        for cell in cells:
            if hasattr(bv, cell):
                setattr(bv, cell, torch.compile(getattr(bv, cell), **kw))
        if hasattr(m, "image_cleaning") and not self.smoke:
            m.image_cleaning = torch.compile(m.image_cleaning, **kw)
        return m

    # -- engine ---------------------------------------------------------------------------------------------
    def sec_engine(self, deadline):
        master, wdesc = self._model("basicvsr")
        dt = torch.bfloat16 if self.smoke else torch.float16
        ctx = ops.use_backend("torch") if self.smoke else _null()  # smoke: no interpreted kernels (see models)
        ctx.__enter__()
        try:
            return self._engine(master, wdesc, dt, deadline)
        finally:
            ctx.__exit__(None, None, None)

    def _engine(self, master, wdesc, dt, deadline):
        import numpy as np
        from vsr_engine.engine import Engine
        res: Dict[str, object] = {"model": "basicvsr", "weights": wdesc, "dtype": str(dt)}
        h, w = (16, 16) if self.smoke else (180, 320)
        n = 8 if self.smoke else 100
        window = 4 if self.smoke else 30
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]
        eng = Engine(copy.deepcopy(master), device=self.dev, dtype=dt, window=window)
        runs = []
        for _ in range(2):  # the first run of this process compiles (see coldstart); the second is steady state
            t = time.perf_counter()
            outs = sum(1 for _ in eng.run(frames))
            sync(self.dev)
            runs.append((time.perf_counter() - t, outs))
        (el0, _), (el, outs) = runs
        res["stream"] = {"frames": n, "size": f"{h}x{w}", "window": window, "seconds": round(el, 2),
                         "fps": round(n / el, 2), "frames_out": outs, "first_run_seconds": round(el0, 2),
                         "first_run_fps": round(n / el0, 2), "note": "fps of the second run on the same Engine"}
        self.out.log(f"Engine {n} frames {h}x{w}: first run {n / el0:.2f} fps, then {n / el:.2f} fps")
        small = (8, 8) if self.smoke else (32, 32)
        counts = (10, 40) if self.smoke else (100, 1000)
        mem = {}
        for cnt in counts:
            if time.perf_counter() > deadline:
                mem[cnt] = "not run: section budget spent"
                continue
            if self.dev.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            src = (rng.integers(0, 256, (*small, 3), dtype=np.uint8) for _ in range(cnt))  # a generator: streamed
            eng = Engine(copy.deepcopy(master), device=self.dev, dtype=dt, window=window)
            k = sum(1 for _ in eng.run(src))
            s = eng.last_summary
            mem[cnt] = {"frames_out": k, "peak_gpu_alloc_mb": round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
                        if self.dev.type == "cuda" else None,
                        "summary": s.as_dict() if s is not None and hasattr(s, "as_dict") else None}
            self.out.log(f"Engine peak memory, {cnt} frames {small}: {mem[cnt]['peak_gpu_alloc_mb']} MB (GPU)")
        res["memory"] = mem
        self.out.json("engine.json", res)
        return {"fps": res["stream"]["fps"], "first_run_fps": res["stream"]["first_run_fps"]}

    # -- coldstart ------------------------------------------------------------------------------------------
    def _child_env(self, base: str) -> Dict[str, str]:
        """The environment of a child whose every compiled-code cache is a (fresh) folder under ``base``."""
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
        for var, sub in CACHE_VARS.items():
            env[var] = os.path.join(base, sub)
            os.makedirs(env[var], exist_ok=True)
        if self.smoke:
            env["OMP_NUM_THREADS"] = "1"
        return env

    def _child(self, cmd: List[str], env: Dict[str, str], timeout: float):
        t = time.perf_counter()
        try:
            r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=max(1.0, timeout))
            rc, text = r.returncode, r.stdout + r.stderr
        except subprocess.TimeoutExpired as ex:
            rc = "timeout"
            text = "".join(v.decode(errors="replace") if isinstance(v, bytes) else (v or "")
                           for v in (ex.stdout, ex.stderr)) + f"\nTIMEOUT after {timeout:.0f} s"
        return rc, text, time.perf_counter() - t

    def _start_cmd(self, out_json: str, fidelity: bool) -> List[str]:
        cmd = [sys.executable, os.path.join(HERE, "engine_start.py"), "--json", out_json, "--model", "basicvsr",
               "--dtype", "bf16" if self.smoke else "fp16", "--device", self.dev.type]
        if self.a.basicvsr_weights:
            cmd += ["--weights", self.a.basicvsr_weights]
        npz = self._lr_npz()
        if npz:
            cmd += ["--npz", npz]
        if self.smoke:
            cmd += ["--size", "16x16", "--frames", "8", "--window", "4", "--backend", "torch", "--threads", "1"]
        else:
            cmd += ["--frames", "150", "--window", "30"] + ([] if npz else ["--size", "180x320"])
        if fidelity and npz:
            cmd.append("--fidelity")
        return cmd

    def _lr_npz(self):
        p = (self.a.lr_npz or getattr(self.a, "real_frames", None)
             or ("" if self.smoke else os.path.join(DEVICE_DIR, "bbb_lr_180x320.npz")))
        return p if p and os.path.isfile(p) else None

    def sec_coldstart(self, deadline):
        from engine_start import cache_locations  # bench/engine_start.py (the child), beside this script
        import tempfile
        defaults = cache_locations()
        tmp_root = os.path.realpath(tempfile.gettempdir())
        res: Dict[str, object] = {
            "what": "bench/engine_start.py in a fresh process: Engine(BasicVSR) on in-memory frames; first_frame_s "
                    "is from the Engine(...) call to the first output frame",
            "default_cache_dirs": defaults,
            "default_cache_dirs_under_tmp": [k for k, p in defaults.items()
                                             if os.path.realpath(p).startswith(tmp_root + os.sep)],
            "cache_vars_set_for_children": sorted(CACHE_VARS), "runs": {}}
        runs = res["runs"]
        base = tempfile.mkdtemp(prefix="vsr_coldstart_")
        try:
            env = self._child_env(os.path.join(base, "caches"))
            census = _census(os.path.join(base, "caches"))
            for label in ("cold", "warm"):
                left = deadline - time.perf_counter()
                if left < 5:
                    runs[label] = {"status": "not run: section budget spent"}
                    continue
                reserve = 0.0 if label == "warm" else min(30.0, 0.25 * left)  # leave the warm run its time
                runs[label] = self._start_run(label, self._start_cmd(os.path.join(base, f"{label}.json"),
                                                                      label == "warm"), env, left - reserve)
                after = _census(os.path.join(base, "caches"))
                runs[label]["cache_added"] = _census_diff(census, after)
                census = after
            # scripts/warmup.py on fresh caches, then the Engine: does the pre-build leave nothing to compile?
            cold_w = runs["cold"].get("wall_s") or 0.0
            left = deadline - time.perf_counter()
            if not self.a.skip_warmup_check and left > 1.2 * cold_w + 10:
                env2 = self._child_env(os.path.join(base, "caches2"))
                wj = os.path.join(base, "warmup.json")
                cmd = [sys.executable, os.path.join(REPO, "scripts", "warmup.py"), "--model", "basicvsr",
                       "--dtype", "bf16" if self.smoke else "fp16", "--json", wj]
                cmd += (["--size", "16x16", "--frames", "4", "--window", "4", "--device", "cpu"] if self.smoke
                        else ["--size", "180x320", "--window", "30"])  # the Engine child's settings
                rc, text, wall = self._child(cmd, env2, left - 10)
                wres = {"rc": rc, "wall_s": round(wall, 2), "log_tail": text[-1500:]}
                if rc == 0 and os.path.isfile(wj):
                    with open(wj) as f:
                        w = json.load(f)
                    wres.update(steps=w.get("steps"), built=w.get("built"))
                runs["warmup_script"] = wres
                c2 = _census(os.path.join(base, "caches2"))
                left = deadline - time.perf_counter()
                if left > 5:
                    runs["after_warmup"] = self._start_run("after_warmup", self._start_cmd(
                        os.path.join(base, "after_warmup.json"), False), env2, left)
                    runs["after_warmup"]["cache_added"] = _census_diff(c2, _census(os.path.join(base, "caches2")))
                else:
                    runs["after_warmup"] = {"status": "not run: section budget spent"}
            else:
                runs["warmup_script"] = {"status": "not run: " + ("--skip-warmup-check" if self.a.skip_warmup_check
                                                                  else f"{left:.0f} s left, the cold run took "
                                                                       f"{cold_w:.0f} s")}
        finally:
            shutil.rmtree(base, ignore_errors=True)
        keyf = ("first_frame_s", "total_s", "steady_fps", "import_s", "process_to_first_frame_s")
        out = {f"{lab}_{k}": runs[lab].get(k) for lab in ("cold", "warm", "after_warmup") if lab in runs
               for k in keyf[:3]}
        warm_ff = runs.get("warm", {}).get("first_frame_s")
        res["target"] = "first frame within 3 s of Engine(...) on a machine that has run the package once (warm)"
        res["target_met"] = (warm_ff is not None and warm_ff <= 3.0)
        res["recompiled_in_warm_run"] = {k: v for k, v in (runs.get("warm", {}).get("cache_added") or {}).items()
                                         if v.get("files")}
        if "fidelity" in runs.get("warm", {}):
            out["fidelity_psnr_db"] = runs["warm"]["fidelity"].get("psnr_db_mean")
        res["summary"] = out
        self.out.json("coldstart.json", res)
        self.out.log("coldstart: " + ", ".join(f"{k} {v}" for k, v in out.items()))
        bad = [lab for lab in ("cold", "warm") if runs.get(lab, {}).get("rc") not in (0, None)]
        if bad:
            raise RuntimeError(f"engine_start failed in the {'/'.join(bad)} run(s): see coldstart.json")
        return {**out, "target_met": res["target_met"]}

    def _start_run(self, label: str, cmd: List[str], env: Dict[str, str], timeout: float) -> dict:
        jpath = cmd[cmd.index("--json") + 1]
        rc, text, wall = self._child(cmd, env, timeout)
        r: dict = {}
        if rc == 0 and os.path.isfile(jpath):
            with open(jpath) as f:
                r = json.load(f)
        r.update(rc=rc, wall_s=round(wall, 2), log_tail=text[-1500:] if rc != 0 else text[-400:])
        if rc != 0:
            r["status"] = "timeout (cut by the section budget)" if rc == "timeout" else f"failed rc={rc}"
        self.out.log(f"coldstart {label}: rc={rc} wall {wall:.1f} s; first frame {r.get('first_frame_s')} s after "
                     f"Engine(...), total {r.get('total_s')} s, steady {r.get('steady_fps')} fps")
        return r

    # -- file -----------------------------------------------------------------------------------------------
    def sec_file(self, deadline):
        try:
            import av
        except Exception as e:
            return {"status": f"skipped: PyAV not importable ({type(e).__name__}: {e}); carry the av wheel "
                              "(scripts/fetch_device_wheels.sh)"}
        import tempfile
        from vsr_engine.engine import Engine
        tmpd = tempfile.mkdtemp(prefix="vsr_file_")
        try:
            if self.smoke:  # never the real 540p clip on a CPU unless it is named
                clip = self.a.clip or _synthetic_clip(os.path.join(tmpd, "synthetic.mp4"))
            else:
                clip = self.a.clip or os.path.join(DEVICE_DIR, "bbb_540p.mp4")
                if not os.path.isfile(clip):
                    return {"status": f"skipped: no input clip ({clip} missing: scripts/make_device_clip.py)"}
            cin = _probe(clip)
            cores = self.a.cores or os.cpu_count() or 1
            preset, why = choose_preset(HOST_BUDGET, cores, self.a.encode_fps)
            master, wdesc = self._model("basicvsr")
            dt = torch.bfloat16 if self.smoke else torch.float16
            window = 4 if self.smoke else 30
            dst = os.path.join(tmpd, "out_x4.mp4")
            stamps: List[float] = []
            cut = {"at": None}

            def progress(done, total, seconds):
                stamps.append(time.perf_counter())
                if time.perf_counter() > deadline and cut["at"] is None:
                    cut["at"] = done
                    raise TimeoutError(f"section budget spent after {done} frames")
            ctx = ops.use_backend("torch") if self.smoke else _null()
            t0 = time.perf_counter()
            with ctx:
                eng = Engine(copy.deepcopy(master), device=self.dev, dtype=dt, window=window)
                try:
                    s = eng.run(clip, dst, codec="libx264", crf=18, preset=preset, force=True, progress=progress)
                except Exception:
                    if cut["at"] is None:
                        raise
                    s = eng.last_summary
            el = time.perf_counter() - t0
            n = len(stamps)
            k = min(window, n // 2)
            sd = s.as_dict() if s is not None else {}
            secs = sd.get("seconds") or el
            stages = {st: round(v, 3) for st, v in (sd.get("stages") or {}).items()}
            res = {"input": {"path": os.path.relpath(clip, REPO) if clip.startswith(REPO) else os.path.basename(clip),
                             **cin},
                   "model": "basicvsr", "weights": wdesc, "dtype": str(dt).replace("torch.", ""), "window": window,
                   "encoder": {"codec": "libx264", "crf": 18, "preset": preset, "threads": "libx264 default (auto)",
                               "preset_reason": why, "cores": cores},
                   "frames_out": sd.get("frames_out", n), "seconds": round(secs, 2),
                   "fps": round(sd.get("fps") or (n / secs if secs else 0.0), 2),
                   "wall_from_engine_ctor_s": round(el, 2),
                   "first_frame_s": round(stamps[0] - t0, 2) if stamps else None,
                   "steady_fps": round((n - k) / (stamps[-1] - stamps[k - 1]), 2)
                   if n > k >= 1 and stamps[-1] > stamps[k - 1] else None,
                   "stages_busy_s": stages,
                   "stage_share_of_wall": {st: round(v / secs, 3) for st, v in stages.items()} if secs else {},
                   "bound_by": sd.get("bound_by"), "output_size": sd.get("output_size"),
                   "peak_memory_mb": round((sd.get("peak_memory_bytes") or 0) / 2 ** 20, 1),
                   "cut_by_budget_after_frames": cut["at"]}
            if cut["at"] is None and os.path.isfile(dst):
                res["output"] = {**_probe(dst), "bytes": os.path.getsize(dst)}
                if self.a.keep_video:
                    os.makedirs(self.a.keep_video, exist_ok=True)
                    shutil.move(dst, os.path.join(self.a.keep_video, os.path.basename(dst)))
            self.out.json("file.json", res)
            self.out.log(f"file to file {cin.get('width')}x{cin.get('height')} -> {res['output_size']}: "
                         f"{res['frames_out']} frames, {res['fps']} fps, preset {preset}, bound by {res['bound_by']}, "
                         f"shares {res['stage_share_of_wall']}")
            info = {"fps": res["fps"], "preset": preset, "bound_by": res["bound_by"]}
            if cut["at"] is not None:
                info["status"] = f"cut: section budget spent after {cut['at']} frames"
            return info
        finally:
            shutil.rmtree(tmpd, ignore_errors=True)

    # -- profile --------------------------------------------------------------------------------------------
    def sec_profile(self, deadline):
        from torch.profiler import ProfilerActivity, profile
        master, wdesc = self._model("basicvsr")
        dt = torch.bfloat16 if self.smoke else torch.float16
        h, w, frames = (16, 16, 3) if self.smoke else (540, 960, 30)
        step = model_step(copy.deepcopy(master).to(self.dev), dt)
        g = torch.Generator().manual_seed(0)
        x = torch.rand(1, frames, 3, h, w, generator=g).to(self.dev, dt)
        ctx = ops.use_backend("torch") if self.smoke else _null()  # smoke: no interpreted kernels (see models)
        cuda = self.dev.type == "cuda"
        res: Dict[str, object] = {"step": "model_step(basicvsr, dtype)", "weights": wdesc,
                                  "dtype": str(dt).replace("torch.", ""), "shape": [1, frames, 3, h, w]}
        with torch.inference_mode(), ctx:
            t = time.perf_counter()
            step(x[:, :min(frames, 4)])  # the shape's first call: kernel compiles, cuDNN plans
            sync(self.dev)
            res["warmup_s"] = round(time.perf_counter() - t, 2)
            if deadline - time.perf_counter() > 4 * res["warmup_s"] + 5:
                t = time.perf_counter()
                step(x)
                sync(self.dev)
                res["window_ms_unprofiled"] = round((time.perf_counter() - t) * 1e3, 1)
                res["fps_unprofiled"] = round(frames / (time.perf_counter() - t), 2)
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                t = time.perf_counter()
                step(x)
                sync(self.dev)
                res["window_ms_profiled"] = round((time.perf_counter() - t) * 1e3, 1)
        ka = prof.key_averages()
        rows, info = profile_rows(ka, cuda, self.a.profile_top)
        res.update(info)
        table = ""
        for key in (("self_device_time_total", "self_cuda_time_total") if cuda else ()) + ("self_cpu_time_total",):
            try:  # the name of the device-time column changed across torch versions
                table = ka.table(sort_by=key, row_limit=40, max_name_column_width=90)
                break
            except Exception as e:
                table = f"table sorted by {key} failed: {type(e).__name__}: {e}\n"
        self.out.text("profile.txt", table)
        self.out.csv("profile.csv", rows)
        self.out.json("profile.json", res)
        top = res.get("top_kernels") or res.get("top_ops") or []
        self.out.log(f"profile {h}x{w} x{frames} {res['dtype']}: {res.get('total_ms')} ms {res.get('time_kind')}; "
                     + ", ".join(f"{g['group']} {100 * g['share']:.1f} %" for g in res.get("groups", [])[:6]))
        for r in top[:8]:
            self.out.log(f"  {100 * r['share']:5.1f} %  {r['name'][:100]}")
        return {"total_ms": res.get("total_ms"), "time_kind": res.get("time_kind"),
                "groups": {g["group"]: round(g["share"], 3) for g in res.get("groups", [])}}

    # -- choice ---------------------------------------------------------------------------------------------
    def sec_choice(self, deadline):
        # eager rows are the torch backend: ranked with the kernels, so a kernel slower than eager is never first
        meas = [{"op": r["op"], "backend": "torch" if r["impl"] == "eager" else r["impl"], "ms": r["ms"],
                 "numel": r.get("numel"), "pass": r.get("pass")} for r in self.op_rows if r.get("ms") is not None]
        if not meas or self.dev.type != "cuda":
            return {"note": "no GPU kernel rows: table unchanged"}
        t = _choice.from_rows(meas, str(self.env.get("device")))
        _choice.write(t, os.path.join(self.out.path, "backend_choice.json"))
        if self.a.update_choice:
            _choice.write(t, _choice.PATH)
        return {"orders": {op: e["order"] for op, e in t["ops"].items()}}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for every result (created)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, < 1 minute: proves the script")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 460; smoke 300)")
    ap.add_argument("--frames", type=int, default=30, help="window length of the model step (>= 30)")
    ap.add_argument("--basicvsr-weights", help="official BasicVSR .pth (carried with the tree); random init if not")
    ap.add_argument("--realbasicvsr-weights", help="RealBasicVSR checkpoint; random init if not given")
    ap.add_argument("--real-frames", help=".npz with 'frames' uint8 (T, H, W, 3): real LR frames for the models "
                    "section's fidelity rows (their size must be one of the section's sizes)")
    ap.add_argument("--skip", action="append", default=[], choices=SECTIONS)
    ap.add_argument("--compile-all", action="store_true", help="torch.compile RealBasicVSR too (more compiles)")
    ap.add_argument("--compile-reserve", type=float, default=60.0,
                    help="start a torch.compile only with this many seconds left in the models section")
    ap.add_argument("--update-choice", action="store_true",
                    help="also write the measured order over vsr_engine/ops/backend_choice.json")
    ap.add_argument("--archive", help="one .tgz of everything under --out, rewritten after every section "
                                      "(default <out>/../proof.tgz)")
    ap.add_argument("--clip", help="real 540p clip for the file section (default build/device/bbb_540p.mp4: "
                                   "scripts/make_device_clip.py)")
    ap.add_argument("--lr-npz", help="real 180x320 frames (npz 'frames') for the coldstart run and its fidelity "
                                     "check (default build/device/bbb_lr_180x320.npz)")
    ap.add_argument("--encode-fps", type=float, default=30.0,
                    help="the rate the host encoder must keep up with when the preset is chosen (default 30)")
    ap.add_argument("--cores", type=int, default=None, help="host cores for the preset choice (default: all)")
    ap.add_argument("--keep-video", help="keep the file section's 4K output in this folder (default: deleted)")
    ap.add_argument("--profile-top", type=int, default=25, help="kernels/ops listed by the profile section")
    ap.add_argument("--skip-warmup-check", action="store_true",
                    help="coldstart: skip scripts/warmup.py on fresh caches followed by the Engine")
    a = ap.parse_args(argv)
    for p in (a.clip, a.lr_npz):
        if p and not os.path.isfile(p):
            ap.error(f"file not found: {p}")
    for p in (a.basicvsr_weights, a.realbasicvsr_weights):
        if p and not os.path.isfile(p):
            ap.error(f"weights file not found: {p}")
    if a.budget is None:
        a.budget = 300.0 if a.smoke else 460.0
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if not a.smoke and not torch.cuda.is_available():
        print("gpu_proof: no CUDA device (use --smoke on a CPU)", file=sys.stderr)
        return 2
    torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32 here (eager fp32 rows, references)
    torch.backends.cuda.matmul.allow_tf32 = False
    if a.smoke:
        torch.set_num_threads(1)
    return Proof(a).run()


if __name__ == "__main__":
    sys.exit(main())
