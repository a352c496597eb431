"""Shared helpers for the op microbenchmarks (bench/bench_<op>.py): GPU timing, measured copy bandwidth, CSV rows.

Row format of bench/results/ops.csv (one row per op x case x implementation; appended, never rewritten):

    date, git_sha, device, torch, triton, cuda, op, case, shape, dtype, pass, impl, median_ms, speedup_vs_eager,
    min_bytes, gbps, copy_gbps, roofline_frac, notes

``pass`` is ``fwd`` or ``fwd+bwd``; ``impl`` is ``eager`` (PyTorch, the op's reference), ``compile``
(torch.compile of that reference, inductor), ``triton`` or ``cuda`` (vsr_engine kernels, backend forced).
``min_bytes`` is the op's compulsory HBM traffic (every input read once, every output written once), ``gbps`` =
min_bytes / median time, ``copy_gbps`` the device-to-device copy bandwidth measured in the same run (read + write
bytes / time), ``roofline_frac`` = gbps / copy_gbps. Medians over ``--iters`` CUDA-event-timed calls after
``--warmup`` calls. Timing thresholds are never asserted anywhere.

The scripts refuse to run without a CUDA device (exit 2, nothing written): CPU numbers would be meaningless.
``--dry-run`` runs tiny shapes on whatever device there is (set TRITON_INTERPRET=1 for the triton rows on a CPU)
and prints rows without writing them: it proves the script, not the speed.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import os
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Sequence

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from vsr_engine import ops  # noqa: E402

RESULTS = os.path.join(HERE, "results", "ops.csv")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FIELDS = ["date", "git_sha", "device", "torch", "triton", "cuda", "op", "case", "shape", "dtype", "pass", "impl",
          "median_ms", "speedup_vs_eager", "min_bytes", "gbps", "copy_gbps", "roofline_frac", "notes"]


@dataclass
class Row:
    op: str
    case: str
    shape: str
    dtype: str
    pass_: str
    impl: str
    median_ms: float
    min_bytes: int
    speedup_vs_eager: float = float("nan")
    gbps: float = float("nan")
    copy_gbps: float = float("nan")
    roofline_frac: float = float("nan")
    notes: str = ""
    env: Dict[str, str] = field(default_factory=dict)

    def as_csv(self) -> Dict[str, str]:
        d = asdict(self)
        env = d.pop("env")
        d["pass"] = d.pop("pass_")
        out = {**env, **d}
        return {k: (f"{out[k]:.6g}" if isinstance(out[k], float) else str(out[k])) for k in FIELDS}


def parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dtype", default="fp16", choices=sorted(DTYPES), help="feature dtype (default fp16)")
    ap.add_argument("--impls", default="eager,compile,triton,cuda,cupy", help="comma list of implementations")
    ap.add_argument("--backward", action="store_true", help="also time forward+backward")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--out", default=RESULTS, help="CSV to append to (default bench/results/ops.csv)")
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes on any device; print rows, write nothing")
    return ap


def require_gpu(args) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if args.dry_run:
        return torch.device("cpu")
    print("refusing to benchmark: no CUDA device (CPU timings of GPU kernels mean nothing); "
          "use --dry-run to check the script", file=sys.stderr)
    sys.exit(2)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo ("" where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        return ""


def git_sha() -> str:
    if os.environ.get("VSR_ENGINE_GIT_SHA"):   # a copied tree without .git (e.g. the GPU machine)
        return os.environ["VSR_ENGINE_GIT_SHA"]
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "") if sha else "unknown"
    except Exception:
        return "unknown"


def env_info(device: torch.device) -> Dict[str, str]:
    try:
        import triton
        tv = triton.__version__
    except Exception:
        tv = "none"
    return {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "git_sha": git_sha(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)",
            "torch": torch.__version__, "triton": tv, "cuda": str(torch.version.cuda)}


def median_ms(fn: Callable[[], object], device: torch.device, iters: int, warmup: int) -> float:
    """Median over ``iters`` calls, each timed with CUDA events (wall clock on the CPU for dry runs)."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(iters):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    else:
        import time
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


_COPY: Dict[str, float] = {}


def copy_gbps(device: torch.device) -> float:
    """Device-to-device copy bandwidth in GB/s counting read + write bytes (1 GiB buffer, median of 20)."""
    key = str(device)
    if key not in _COPY:
        if device.type != "cuda":
            _COPY[key] = float("nan")
        else:
            n = 1 << 30
            src = torch.empty(n, dtype=torch.uint8, device=device)
            dst = torch.empty_like(src)
            ms = median_ms(lambda: dst.copy_(src), device, 20, 3)
            _COPY[key] = 2 * n / (ms * 1e-3) / 1e9
            del src, dst
            torch.cuda.empty_cache()
    return _COPY[key]


def nbytes(*tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def available_impls(wanted: Sequence[str], op: str, device: torch.device) -> List[str]:
    out = []
    info = ops.backend_info()[op]
    for name in wanted:
        if name in ("triton", "cuda", "cupy"):
            live = info[name]["live"] if device.type == "cuda" else (name == "triton" and ops._backend.INTERPRET)
            if not live:
                print(f"  [{op}] {name}: not live here ({info[name]['why']})", file=sys.stderr)
                continue
        out.append(name)
    return out


def run_case(op: str, case: str, shape: str, dtype: torch.dtype, make: Callable[[], tuple],
             eager: Callable, kernel: Callable, min_bytes: int, args, device, env, notes: str = "",
             grad_inputs: Sequence[int] = ()) -> List[Row]:
    """Time one case for every requested implementation.

    ``make()`` returns fresh inputs; ``eager(*inputs)`` is the PyTorch reference, ``kernel(*inputs)`` the vsr_engine
    op (run under each forced backend). With --backward, inputs ``grad_inputs`` get gradients and a second pass
    ``fwd+bwd`` is timed (upstream gradient of ones)."""
    impls = available_impls([s.strip() for s in args.impls.split(",") if s.strip()], op, device)
    passes = ["fwd"] + (["fwd+bwd"] if args.backward and grad_inputs else [])
    rows: List[Row] = []
    bw = copy_gbps(device)
    dname = {v: k for k, v in DTYPES.items()}[dtype]
    for ps in passes:
        inputs = list(make())
        if ps == "fwd+bwd":
            inputs = [t.requires_grad_() if i in grad_inputs else t for i, t in enumerate(inputs)]
        base = None
        for impl in impls:
            if impl == "eager":
                fn = eager
            elif impl == "compile":
                torch._dynamo.reset()
                fn = torch.compile(eager)
            else:
                def fn(*a, _b=impl):
                    with ops.use_backend(_b, op=op):
                        return kernel(*a)
            if ps == "fwd":
                def call(fn=fn):
                    with torch.no_grad():
                        return fn(*inputs)
            else:
                def call(fn=fn):
                    out = fn(*inputs)
                    outs = out if isinstance(out, (tuple, list)) else (out,)
                    torch.autograd.backward([o for o in outs if o.requires_grad],
                                            [torch.ones_like(o) for o in outs if o.requires_grad])
                    for i in grad_inputs:
                        inputs[i].grad = None
            try:
                ms = median_ms(call, device, args.iters, args.warmup)
            except Exception as e:  # one failing implementation must not lose the others' rows
                print(f"  [{op}] {case} {impl} {ps}: failed: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            base = ms if impl == "eager" else base
            gb = min_bytes / (ms * 1e-3) / 1e9 if ps == "fwd" else float("nan")
            rows.append(Row(op, case, shape, dname, ps, impl, ms, min_bytes if ps == "fwd" else 0,
                            speedup_vs_eager=(base / ms) if base else float("nan"), gbps=gb, copy_gbps=bw,
                            roofline_frac=gb / bw if bw == bw else float("nan"), notes=notes, env=env))
            r = rows[-1]
            print(f"{op:13s} {case:28s} {dname} {ps:7s} {impl:8s} {ms:9.4f} ms  x{r.speedup_vs_eager:5.2f}  "
                  f"{gb:8.1f} GB/s  {100 * r.roofline_frac:5.1f}% of copy", flush=True)
    return rows


def write_rows(rows: List[Row], args) -> None:
    if args.dry_run:
        print(f"dry run: {len(rows)} rows not written", file=sys.stderr)
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    new = not os.path.exists(args.out) or os.path.getsize(args.out) == 0
    with open(args.out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow(r.as_csv())
    print(f"appended {len(rows)} rows to {args.out}", file=sys.stderr)


def run_plain_case(op: str, case: str, shape: str, dtype: torch.dtype, make: Callable[[], tuple],
                   impls: Dict[str, Callable], min_bytes: int, device, env, iters: int = 50, warmup: int = 10,
                   notes: str = "") -> List[Row]:
    """Forward-only timing of ops outside the backend system (the fast step's channels-last kernels): ``impls``
    maps an implementation name (``eager`` first: the speed-up base) to a callable on ``make()``'s inputs."""
    rows: List[Row] = []
    bw = copy_gbps(device)
    dname = {v: k for k, v in DTYPES.items()}[dtype]
    inputs = make()
    base = None
    for impl, fn in impls.items():
        def call(fn=fn):
            with torch.no_grad():
                return fn(*inputs)
        try:
            ms = median_ms(call, device, iters, warmup)
        except Exception as e:  # one failing implementation must not lose the others' rows
            print(f"  [{op}] {case} {impl}: failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        base = ms if impl == "eager" else base
        gb = min_bytes / (ms * 1e-3) / 1e9
        rows.append(Row(op, case, shape, dname, "fwd", impl, ms, min_bytes,
                        speedup_vs_eager=(base / ms) if base else float("nan"), gbps=gb, copy_gbps=bw,
                        roofline_frac=gb / bw if bw == bw else float("nan"), notes=notes, env=env))
        r = rows[-1]
        print(f"{op:13s} {case:28s} {dname} fwd     {impl:8s} {ms:9.4f} ms  x{r.speedup_vs_eager:5.2f}  "
              f"{gb:8.1f} GB/s  {100 * r.roofline_frac:5.1f}% of copy", flush=True)
    return rows


def fast_op_main(doc: str, cases: Callable[[torch.device, torch.dtype, bool], list], argv=None) -> List[Row]:
    """main() of bench/bench_{bias_act,warp_nhwc,shuffle_nhwc}.py: ``cases(dev, dtype, dry)`` gives
    ``(op, case, shape, make, impls, min_bytes)`` tuples."""
    args = parser(doc.splitlines()[0]).parse_args(argv)
    dev = require_gpu(args)
    env = env_info(dev)
    dtype = DTYPES[args.dtype]
    rows: List[Row] = []
    for op, case, shape, make, impls, mb in cases(dev, dtype, args.dry_run):
        rows += run_plain_case(op, case, shape, dtype, make, impls, mb, dev, env,
                               2 if args.dry_run else args.iters, 1 if args.dry_run else args.warmup)
    write_rows(rows, args)
    return rows
