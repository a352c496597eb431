"""One command that proves the kernels and the models on a fresh GPU machine and fits one 10-minute device call.

    python3 bench/gpu_proof.py --out $OUT/proof --basicvsr-weights build/weights/BasicVSR_REDS4.pth
    python3 bench/gpu_proof.py --smoke --out /tmp/proof      # CPU, tiny shapes, < 1 minute (CI)

Sections, in order, each under a share of ``--budget`` seconds (default 450: done within 8 minutes) and each
written when it finishes (CSV/JSON through a temporary file and a rename, so nothing half-written looks complete;
``log.txt`` grows as it goes):
  env        device, versions, ``vsr-engine info``'s backend lines, measured copy GB/s and matmul TFLOP/s (fp16/bf16);
  tests      the GPU op tests (``pytest tests/ops -m gpu``, fp32 references with TF32 off) -> tests.txt;
  ops        per-op forward and forward+backward, eager vs triton vs cuda vs cupy at the real shapes (64 channels at
             180x320 and 540x960, the pixel-shuffle tail at 2x and 4x), fp16 and bf16 -> ops.csv (GB/s against
             the measured copy bandwidth, TFLOP/s against the measured matmul peak);
  models     BasicVSR and RealBasicVSR x4 at 180x320 and 540x960, a window of --frames (>= 30) frames: eager fp32,
             torch.compile fp16 (one bounded compile per shape), vsr_engine fp16 / bf16 -> models.csv, plus the
             fp16/bf16 fidelity against the fp32 output (PSNR, max |diff|) -> fidelity.csv;
  engine     the streaming Engine on in-memory frames end to end (fps) and its peak memory for 100 vs 1000
             small frames -> engine.json;
  choice     backend_choice.json: the automatic backend order the measured ops rows imply (copy it over
             vsr_engine/ops/backend_choice.json to adopt it).
No network, no PyAV (never imported), weights only from the files given. A section that fails or runs out of
budget is recorded as such in summary.json and the next one still runs.
"""
from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
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

SECTIONS = ("env", "tests", "ops", "models", "engine", "choice")
# share of the budget each section may use (the rest rolls over to later sections)
SHARE = {"env": 0.03, "tests": 0.40, "ops": 0.20, "models": 0.28, "engine": 0.08, "choice": 0.01}


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


# ---------------------------------------------------------------------------------------------------- sections
class Proof:
    def __init__(self, a):
        self.a = a
        self.out = Out(a.out)
        self.dev = torch.device("cuda" if torch.cuda.is_available() and not a.smoke else "cpu")
        self.smoke = a.smoke
        self.t0 = time.perf_counter()
        self.summary: Dict[str, dict] = {}
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
                continue
            share = SHARE[name] * self.a.budget + max(0.0, done)
            if self.left() < 5 and name != "choice":  # choice only reads the rows: always cheap
                self.summary[name] = {"status": "not run: budget spent"}
                self.out.log(f"== {name}: not run, budget spent")
                continue
            self.out.log(f"== {name} (up to {min(share, self.left()):.0f} s)")
            t = time.perf_counter()
            try:
                info = getattr(self, f"sec_{name}")(deadline=t + min(share, self.left())) or {}
                self.summary[name] = {"status": "ok", **info}
            except Exception as e:
                self.summary[name] = {"status": f"failed: {type(e).__name__}: {e}"}
                self.out.log(f"{name} failed:\n{traceback.format_exc()}")
            el = time.perf_counter() - t
            self.summary[name]["seconds"] = round(el, 1)
            done = share - el  # unused time rolls over
            self.out.json("summary.json", {"smoke": self.smoke, "elapsed_s": round(time.perf_counter() - self.t0, 1),
                                           "sections": self.summary})
        bad = [k for k, v in self.summary.items() if str(v.get("status", "")).startswith("failed")]
        self.out.log(f"done in {time.perf_counter() - self.t0:.0f} s; failed sections: {bad or 'none'}")
        return 1 if bad else 0

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
               "tests/ops/test_pixel_shuffle.py" if self.smoke else "tests/ops"]  # smoke: the GPU tests skip
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
        for (h, w), tag in zip(sizes if self.smoke else [(180, 320), (360, 640)], ("tail 2x", "tail 4x")):
            cases.append(("pixel_shuffle", f"{ch}ch {tag} {h}x{w}->{2 * h}x{2 * w} +bias lrelu",
                          lambda dt, h=h, w=w: [rnd(1, 4 * ch, h, w, dt=dt), rnd(4 * ch, dt=dt)],
                          lambda x, b: pixel_shuffle_lrelu(x, 2, b), lambda x, b: pixel_shuffle_lrelu_ref(x, 2, b),
                          (0, 1), 0))
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
        return {"rows": len(rows), "cut_by_budget": skipped}

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
        rows, fid = [], []
        frames = 3 if self.smoke else max(30, self.a.frames)
        sizes = [(16, 16)] if self.smoke else [(180, 320), (540, 960)]
        reps = 1  # one timed window after the warm-up window (a 540x960 fp32 window is ~190 TFLOP)
        masters = {}
        for h, w in sizes:  # the small size first: if the budget runs out, the 540x960 rows are the ones missing
            for name in ("basicvsr", "realbasicvsr"):
                if name not in masters:
                    masters[name] = self._model(name)
                master, wdesc = masters[name]
                g = torch.Generator().manual_seed(0)
                x32 = torch.rand(1, frames, 3, h, w, generator=g).to(self.dev)
                ref = None
                variants = [("eager fp32", torch.float32, "eager"), ("torch.compile fp16", torch.float16, "compile"),
                            ("vsr_engine fp16", torch.float16, "vsr"), ("vsr_engine bf16", torch.bfloat16, "vsr")]
                if self.smoke:
                    variants = [v for v in variants if v[1] != torch.float16] + [
                        ("torch.compile bf16 (eager backend)", torch.bfloat16, "compile")]
                for desc, dt, kind in variants:
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
                        xin = x32.to(dt)
                        if kind == "compile":
                            m = self._compiled(m)
                            t = time.perf_counter()
                            with torch.inference_mode():
                                m(xin[:, :3])  # the one compile for this shape (3 frames: same cells)
                            sync(self.dev)
                            row["compile_s"] = round(time.perf_counter() - t, 1)
                        # smoke: the interpreted triton kernels are proven in the ops section; torch here keeps
                        # the CPU run short (the same model code, the ops' torch backend)
                        backend_ctx = ops.use_backend("torch") if kind != "vsr" or self.smoke else _null()
                        with torch.inference_mode(), backend_ctx:
                            out = m(xin).float()  # warm-up (cuDNN, kernel compiles) and the output compared below
                            sync(self.dev)
                            t = time.perf_counter()
                            for _ in range(reps):
                                m(xin)
                            sync(self.dev)
                            ms = (time.perf_counter() - t) * 1e3 / reps
                        row.update(ms_per_window=round(ms, 1), fps=round(frames / (ms * 1e-3), 2))
                        if self.dev.type == "cuda":
                            row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
                            torch.cuda.reset_peak_memory_stats()
                        if ref is None and dt == torch.float32:
                            ref = out
                        elif ref is not None:
                            d = (out - ref).clamp(-1, 1)
                            mse = d.square().mean().item()
                            fid.append({"model": name, "size": f"{h}x{w}", "variant": desc,
                                        "psnr_vs_fp32_db": round(10 * math.log10(1 / max(mse, 1e-20)), 2),
                                        "max_abs_diff": round(d.abs().max().item(), 5)})
                        del m, out
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
        t = time.perf_counter()
        outs = sum(1 for _ in eng.run(frames))
        el = time.perf_counter() - t
        res["stream"] = {"frames": n, "size": f"{h}x{w}", "window": window, "seconds": round(el, 2),
                         "fps": round(n / el, 2), "frames_out": outs}
        self.out.log(f"Engine {n} frames {h}x{w}: {n / el:.2f} fps")
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
        return {"fps": res["stream"]["fps"]}

    # -- choice ---------------------------------------------------------------------------------------------
    def sec_choice(self, deadline):
        meas = [{"op": r["op"], "backend": r["impl"], "ms": r["ms"], "numel": r.get("numel")} for r in self.op_rows
                if r.get("ms") is not None and r["impl"] != "eager"]
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="directory for every result (created)")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny shapes, < 1 minute: proves the script")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 450; smoke 300)")
    ap.add_argument("--frames", type=int, default=30, help="window length of the model step (>= 30)")
    ap.add_argument("--basicvsr-weights", help="official BasicVSR .pth (carried with the tree); random init if not")
    ap.add_argument("--realbasicvsr-weights", help="RealBasicVSR checkpoint; random init if not given")
    ap.add_argument("--skip", action="append", default=[], choices=SECTIONS)
    ap.add_argument("--compile-all", action="store_true", help="torch.compile RealBasicVSR too (more compiles)")
    ap.add_argument("--compile-reserve", type=float, default=60.0,
                    help="start a torch.compile only with this many seconds left in the models section")
    ap.add_argument("--update-choice", action="store_true",
                    help="also write the measured order over vsr_engine/ops/backend_choice.json")
    a = ap.parse_args(argv)
    for p in (a.basicvsr_weights, a.realbasicvsr_weights):
        if p and not os.path.isfile(p):
            ap.error(f"weights file not found: {p}")
    if a.budget is None:
        a.budget = 300.0 if a.smoke else 450.0
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
