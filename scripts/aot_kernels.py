"""Compile every vsr_engine kernel ahead of time for sm_90 and sm_80 on a machine without a GPU, and check it.

    python3 scripts/aot_kernels.py [--out bench/results/kernels_sm90.csv] [--arch 90 --arch 80] [--no-triton] ...

Three sources, one CSV row per (kernel, dtype / instantiation, configuration, arch):
  triton -- scripts/aot_triton.py: every launch the ops make at real shapes and at every configuration their
            launch-configuration functions can return (a sweep over channel / pixel counts), compiled by
            triton.compile for the target in a fresh cache with tl.dot held to triton 3.6's K >= 16; registers /
            spills / stack from the wheel's ptxas -v, shared memory from the metadata;
  nvrtc  -- every csrc/*.cu kernel instantiation the cupy backend launches (vsr_engine/ops/_cupy.py KERNELS),
            compiled with NVRTC (no driver needed) with --ptxas-options=-v;
  nvcc   -- csrc/*.cu with nvcc -Xptxas -v (host launchers included), when nvcc exists.
Exit status 1 (and the reasons on stderr) on a compile error, shared memory over the architecture's limit, or
spills in a fp16/bf16 kernel; fp32/fp64 spills are reported in the CSV only. The CSV is written to a temporary
file and renamed, so a half-written table never looks complete. Needs TRITON_INTERPRET unset (it is removed from
the environment of the triton part, which runs in a subprocess).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(ROOT, "csrc")
FIELDS = ["source", "module", "kernel", "dtype", "arch", "config", "num_warps", "regs", "spill_st", "spill_ld",
          "stack", "smem", "smem_limit", "compile_s", "error", "cases"]
SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024}
LOWP = ("fp16", "bf16", "__half", "__nv_bfloat16")


# ---------------------------------------------------------------------------------------------------- triton
def triton_rows(archs, dtypes=("fp32", "fp16", "bf16", "fp64")) -> List[dict]:
    """Runs scripts/aot_triton.py in a subprocess without TRITON_INTERPRET (the test suite sets it)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    code = ("import json, sys; sys.path.insert(0, %r); import aot_triton as a; "
            "print('@@ROWS@@' + json.dumps(a.compile_all(%r, %r)))" % (os.path.join(ROOT, "scripts"), tuple(archs),
                                                                        tuple(dtypes)))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    if res.returncode != 0 or "@@ROWS@@" not in res.stdout:
        return [{"source": "triton", "module": "*", "kernel": "*", "error": "triton AOT run failed: "
                 + (res.stderr.strip().splitlines() or ["?"])[-1][:300]}]
    return json.loads(res.stdout.split("@@ROWS@@", 1)[1])


# ---------------------------------------------------------------------------------------------------- ptxas -v
_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_NUMS = {"regs": r"Used (\d+) registers", "spill_st": r"(\d+) bytes spill stores",
         "spill_ld": r"(\d+) bytes spill loads",
         "stack": r"(\d+) bytes stack frame", "smem": r"(\d+) bytes smem"}


def parse_ptxas(log: str) -> Dict[str, dict]:
    """ptxas -v output -> {mangled entry: {regs, spill_st, spill_ld, stack, smem}} (static shared memory only)."""
    out: Dict[str, dict] = {}
    cur = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = out.setdefault(m.group(1), {k: 0 for k in _NUMS})
            continue
        if cur is None or "Function properties for" in line:
            continue
        for k, rx in _NUMS.items():
            mm = re.search(rx, line)
            if mm:
                cur[k] = int(mm.group(1))
    return out


def demangle(names: List[str]) -> Dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    res = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True)
    dem = res.stdout.splitlines()
    return dict(zip(names, dem)) if len(dem) == len(names) else {n: n for n in names}


def _short(demangled: str) -> str:
    """'void (anonymous namespace)::fwd_kernel<float>(float const*, ...)' -> 'fwd_kernel<float>'."""
    s = demangled.split("(anonymous namespace)::")[-1]
    depth, out = 0, ""
    for ch in s:
        if ch == "(" and depth == 0:
            break
        depth += ch == "<"
        depth -= ch == ">"
        out += ch
    return out


# ---------------------------------------------------------------------------------------------------- nvrtc
def nvrtc_rows(archs) -> List[dict]:
    sys.path.insert(0, ROOT)
    from vsr_engine.ops import _cupy
    ok, why = _cupy.nvrtc_available()
    if not ok:
        return [{"source": "nvrtc", "module": "*", "kernel": "*", "error": f"SKIP {why}"}]
    rows = []
    for mod, names in _cupy.KERNELS.items():
        for cc in archs:
            t0 = time.perf_counter()
            try:
                log, lowered = _cupy.nvrtc_compile(mod, names, f"sm_{cc}", ptxas_verbose=True)
                err = ""
            except RuntimeError as e:
                log, lowered, err = "", {}, str(e).strip().splitlines()[0][:300]
            dt = round(time.perf_counter() - t0, 2)
            usage = parse_ptxas(log)
            for name in names:
                u = usage.get(lowered.get(name, "?"))
                row = {"source": "nvrtc", "module": mod, "kernel": name, "dtype": _dtype_of(name), "arch": f"sm_{cc}",
                       "config": "threads from csrc", "num_warps": "", "compile_s": dt, "smem_limit": SMEM_LIMIT[cc],
                       "cases": "", "error": err or ("" if u else "kernel missing from the ptxas log")}
                row.update(u or {k: -1 for k in _NUMS})
                rows.append(row)
    return rows


def _dtype_of(name: str) -> str:
    inside = name[name.find("<") + 1:name.find(",") if "," in name else name.rfind(">")]
    return {"float": "fp32", "__half": "fp16", "__nv_bfloat16": "bf16", "double": "fp64"}.get(inside.strip(), inside)


# ---------------------------------------------------------------------------------------------------- nvcc
def nvcc_rows(archs) -> List[dict]:
    sys.path.insert(0, ROOT)
    from vsr_engine.ops import _build
    nvcc = _build.find_nvcc()
    if nvcc is None:
        return [{"source": "nvcc", "module": "*", "kernel": "*", "error": "SKIP nvcc not found"}]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for src in sorted(f for f in os.listdir(CSRC) if f.endswith(".cu")):
            mod = src[:-3]
            for cc in archs:
                t0 = time.perf_counter()
                res = subprocess.run([nvcc, f"-arch=sm_{cc}", "-std=c++17", "-O3", "-Xptxas", "-v", "-c",
                                      os.path.join(CSRC, src), "-o", os.path.join(d, f"{mod}{cc}.o")],
                                     capture_output=True, text=True, timeout=900)
                dt = round(time.perf_counter() - t0, 2)
                if res.returncode != 0:
                    rows.append({"source": "nvcc", "module": mod, "kernel": "*", "arch": f"sm_{cc}", "compile_s": dt,
                                 "error": (res.stderr.strip().splitlines() or ["?"])[0][:300]})
                    continue
                usage = parse_ptxas(res.stderr)
                dem = demangle(list(usage))
                for mangled, u in sorted(usage.items()):
                    name = _short(dem[mangled])
                    if not name or name == "probe_kernel" and mod != "runtime":
                        continue
                    row = {"source": "nvcc", "module": mod, "kernel": name, "dtype": _dtype_of(name),
                           "arch": f"sm_{cc}", "config": "threads from csrc", "num_warps": "", "compile_s": dt,
                           "smem_limit": SMEM_LIMIT[cc], "cases": "", "error": ""}
                    row.update(u)
                    rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------- checks
def failures(rows: List[dict]) -> List[str]:
    bad = []
    for r in rows:
        what = f"{r.get('source')} {r.get('module')}.{r.get('kernel')} {r.get('dtype', '')} {r.get('arch', '')} " \
               f"{r.get('config', '')}".strip()
        if r.get("error") and not str(r["error"]).startswith("SKIP"):
            bad.append(f"{what}: compile error: {r['error']}")
            continue
        if r.get("error"):
            continue
        if int(r.get("smem", 0)) > int(r.get("smem_limit", 1 << 30)):
            bad.append(f"{what}: shared memory {r['smem']} B > limit {r['smem_limit']} B")
        if r.get("dtype") in LOWP and int(r.get("spill_st", 0)) + int(r.get("spill_ld", 0)) > 0:
            bad.append(f"{what}: spills in a 16-bit kernel ({r['spill_st']} B stores, {r['spill_ld']} B loads)")
    return bad


def write_csv(rows: List[dict], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in FIELDS})
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "kernels_sm90.csv"))
    ap.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 90 (default: 90 and 80)")
    ap.add_argument("--triton-dtypes", default="fp32,fp16,bf16,fp64", help="data dtypes of the triton launches")
    ap.add_argument("--no-triton", action="store_true")
    ap.add_argument("--no-nvrtc", action="store_true")
    ap.add_argument("--no-nvcc", action="store_true")
    a = ap.parse_args(argv)
    archs = a.arch or [90, 80]
    bad_arch = [c for c in archs if c not in SMEM_LIMIT]
    if bad_arch:
        ap.error(f"--arch {bad_arch[0]}: only {sorted(SMEM_LIMIT)} have a shared-memory limit in this table")
    rows, times = [], {}
    tdt = tuple(d.strip() for d in a.triton_dtypes.split(",") if d.strip())
    if not set(tdt) <= {"fp32", "fp16", "bf16", "fp64"}:
        ap.error(f"--triton-dtypes {a.triton_dtypes}: choose from fp32, fp16, bf16, fp64")
    for name, fn, off in (("triton", lambda ar: triton_rows(ar, tdt), a.no_triton),
                          ("nvrtc", nvrtc_rows, a.no_nvrtc),
                          ("nvcc", nvcc_rows, a.no_nvcc)):
        if off:
            continue
        t0 = time.perf_counter()
        rows += fn(archs)
        times[name] = time.perf_counter() - t0
    write_csv(rows, a.out)
    bad = failures(rows)
    skipped = sorted({f"{r['source']}: {r['error'][5:]}" for r in rows if str(r.get("error", "")).startswith("SKIP")})
    n = {s: sum(1 for r in rows if r.get("source") == s and not r.get("error")) for s in times}
    print(f"{len(rows)} rows -> {a.out}; compiled: " + ", ".join(f"{s} {n[s]} in {times[s]:.0f} s" for s in times))
    for s in skipped:
        print(f"skipped {s}")
    sp = [r for r in rows if not r.get("error") and int(r.get("spill_st", 0) or 0) > 0]
    print(f"fp32/fp64 rows with spills (allowed, listed): {len(sp)}")
    for b in bad:
        print("FAIL " + b, file=sys.stderr)  # noqa: T201
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
