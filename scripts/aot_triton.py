"""Ahead-of-time compile of every Triton kernel of vsr_engine.ops for sm_90 / sm_80 without a GPU.

The ops' own triton launch code runs on ``meta`` tensors at real shapes (64 channels at 180x320 and 540x960, the
tail at 2x / 4x); ``JITFunction.run`` is replaced by a recorder, so every launch (kernel, argument types, block
constexprs, num_warps) is the one a CUDA run would make -- the interpreter's block sizes are not used because this
module refuses to run under ``TRITON_INTERPRET=1``. Each distinct launch is compiled with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` and its PTX is re-assembled with the wheel's
``ptxas -v`` for registers, spills and stack; shared memory comes from the compiled metadata.

Library use: ``launches()`` and ``compile_all(archs)``; run as a script through scripts/aot_kernels.py.
"""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from typing import Callable, Dict, List, Tuple

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    raise SystemExit("scripts/aot_triton.py: unset TRITON_INTERPRET (the AOT compile needs the real compiler)")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
          torch.int32: "i32", torch.int64: "i64"}
# shared memory per block, opt-in maximum (CUDA programming guide, compute capabilities table)
SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024}


@contextlib.contextmanager
def recording(out: List[dict]):
    """Replace kernel launches by a record of them (kernel, signature, constexprs, grid)."""
    orig = JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        params = self.params
        bound = dict(zip([p.name for p in params], args))
        opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound.update(kwargs)
        sig, const = {}, {}
        for p in params:
            v = bound.get(p.name, p.default if hasattr(p, "default") else None)
            if p.is_constexpr:
                const[p.name] = v
                sig[p.name] = "constexpr"
            elif isinstance(v, torch.Tensor):
                sig[p.name] = "*" + DTYPES[v.dtype]
            elif v is None:
                const[p.name] = None
                sig[p.name] = "constexpr"
            elif isinstance(v, bool):
                sig[p.name] = "i1"
            elif isinstance(v, int):
                sig[p.name] = "i32" if -2 ** 31 <= v < 2 ** 31 else "i64"
            elif isinstance(v, float):
                sig[p.name] = "fp32"
            else:
                raise TypeError(f"{self.__name__}: cannot type argument {p.name}={v!r}")
        g = grid(bound) if callable(grid) else grid
        out.append({"fn": self, "kernel": self.__name__, "module": self.fn.__module__.rsplit(".", 1)[-1],
                    "sig": sig, "const": const, "grid": tuple(int(x) for x in g), "opts": opts})

    JITFunction.run = run
    try:
        yield out
    finally:
        JITFunction.run = orig


def _cases() -> List[Tuple[str, Callable[[torch.dtype], None]]]:
    """(label, driver(dtype)) pairs; each driver runs an op's triton forward and backward on meta tensors."""
    import importlib
    clean_step, dwpw_conv2d, flow_warp, meta_upscale, pixel_shuffle = (
        importlib.import_module(f"vsr_engine.ops.{n}") for n in
        ("clean_step", "dwpw_conv2d", "flow_warp", "meta_upscale", "pixel_shuffle"))
    m = torch.device("meta")

    def t(*shape, dtype):
        return torch.empty(shape, device=m, dtype=dtype)

    def fw(h, w):
        def go(dt):
            x, fl = t(1, 64, h, w, dtype=dt), t(1, h, w, 2, dtype=dt)
            flow_warp._triton_fwd(x, fl, "zeros", True)
            flow_warp._triton_bwd(x, x, fl, "zeros", True, True, True)
        return go

    def ps(h, w, r, c):
        def go(dt):
            x, b = t(1, c * r * r, h, w, dtype=dt), t(c * r * r, dtype=dt)
            out = pixel_shuffle._triton_fwd(x, r, b, True, 0.1)
            pixel_shuffle._triton_bwd(out, x, r, b, True, 0.1, True)
            pixel_shuffle._triton_bwd(out, None, r, None, False, 0.1, False)
        return go

    def cs(h, w):
        def go(dt):
            x = t(1, 3, h, w, dtype=dt)
            clean_step._triton_fwd(x, x)
            clean_step._triton_bwd(x, t(dtype=torch.float64 if dt == torch.float64 else torch.float32), x)
        return go

    def dw(h, w, c, o):
        def go(dt):
            x, dww, dwb = t(1, c, h, w, dtype=dt), t(c, 1, 3, 3, dtype=dt), t(c, dtype=dt)
            pww, pwb = t(o, c, 1, 1, dtype=dt), t(o, dtype=dt)
            dwpw_conv2d._triton_fwd(x, dww, dwb, pww, pwb, None, 2)
            dwpw_conv2d._triton_bwd(t(1, o, h, w, dtype=dt), x, dww, dwb, pww, pwb, 2, [True] * 5)
        return go

    def mu(h, w, scale):
        def go(dt):
            feat = t(1, 64, h, w, dtype=dt)
            tb = {k: (v.to(m) if isinstance(v, torch.Tensor) else v)
                  for k, v in meta_upscale._tables(h, w, scale, torch.device("cpu")).items()}
            oh, ow = meta_upscale.meta_out_size(h, w, scale)
            cdt = torch.float64 if dt == torch.float64 else torch.float32
            wt = t(tb["off_h"].numel() * tb["off_w"].numel(), 3, 64 * 9, dtype=cdt)
            meta_upscale._triton_apply(feat, wt, tb, 3, oh, ow)
            meta_upscale._triton_apply_bwd(t(1, 3, oh, ow, dtype=dt), feat, wt, tb, 3, True, True)
        return go

    cases = []
    for h, w in ((180, 320), (540, 960)):
        cases += [(f"flow_warp 64ch {h}x{w}", fw(h, w)), (f"dwpw_conv2d 64->64 {h}x{w}", dw(h, w, 64, 64)),
                  (f"pixel_shuffle x2 64ch {h}x{w}", ps(h, w, 2, 64)),
                  (f"meta_upscale x2.3 64ch {h}x{w}", mu(h, w, 2.3)), (f"meta_upscale x4 64ch {h}x{w}", mu(h, w, 4.0))]
    cases += [("pixel_shuffle x2 64ch 360x640 (tail 2x)", ps(360, 640, 2, 64)),
              ("pixel_shuffle x2 3ch 720x1280 (tail 4x, rgb)", ps(720, 1280, 2, 3)),
              ("clean_step 3ch 720x1280", cs(720, 1280)), ("dwpw_conv2d 32->64 180x320", dw(180, 320, 32, 64))]
    return cases


def launches(dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64)) -> List[dict]:
    """Every distinct launch the ops make at the real shapes, per dtype: dicts with kernel/sig/const/opts/cases."""
    seen: Dict[tuple, dict] = {}
    for label, go in _cases():
        for dt in dtypes:
            rec: List[dict] = []
            with recording(rec):
                go(dt)
            for r in rec:
                key = (r["module"], r["kernel"], tuple(sorted(r["sig"].items())),
                       tuple(sorted((k, repr(v)) for k, v in r["const"].items())), tuple(sorted(r["opts"].items())))
                if key in seen:
                    seen[key]["cases"].add(f"{label} {DTYPES[dt]}")
                else:
                    r["cases"] = {f"{label} {DTYPES[dt]}"}
                    r["dtype"] = DTYPES[dt]
                    seen[key] = r
    return list(seen.values())


_PTXAS_RE = {
    "regs": re.compile(r"Used (\d+) registers"),
    "spill_st": re.compile(r"(\d+) bytes spill stores"),
    "spill_ld": re.compile(r"(\d+) bytes spill loads"),
    "stack": re.compile(r"(\d+) bytes stack frame"),
}


def ptxas_bin(cc: int) -> str:
    """The ptxas triton itself uses for this architecture (the wheel ships two)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        return get_ptxas(cc).path
    except Exception:  # older triton: one ptxas
        import triton.backends.nvidia as nv
        return os.path.join(os.path.dirname(nv.__file__), "bin", "ptxas")


def ptxas_usage(ptx: str, arch: str, cc: int) -> dict:
    """Registers / spill bytes / stack from ``ptxas -v`` on the kernel's PTX."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        res = subprocess.run([ptxas_bin(cc), "-v", f"--gpu-name={arch}", src, "-o", os.path.join(d, "k.cubin")],
                             capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"ptxas failed: {res.stderr.strip()[:400]}")
    out = {}
    for k, rx in _PTXAS_RE.items():
        m = rx.search(res.stderr)
        out[k] = int(m.group(1)) if m else 0
    return out


def compile_one(r: dict, cc: int) -> dict:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    row = {"source": "triton", "module": r["module"], "kernel": r["kernel"], "dtype": r["dtype"], "arch": f"sm_{cc}",
           "config": " ".join(f"{k}={v}" for k, v in sorted(r["const"].items())
                              if k.startswith("BLOCK") or k in ("DOT", "INT64", "CDT")),
           "num_warps": r["opts"].get("num_warps", 4), "cases": "; ".join(sorted(r["cases"]))}
    t0 = time.perf_counter()
    try:
        src = ASTSource(fn=r["fn"], signature=r["sig"], constexprs=r["const"])
        opts = {k: v for k, v in r["opts"].items()}
        k = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=opts or None)
        md = k.metadata
        row["smem"] = int(getattr(md, "shared", 0))
        arch = f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"
        row.update(ptxas_usage(k.asm["ptx"], arch, cc))
        row["error"] = ""
    except Exception as e:  # a compile error is a row, the test fails on it
        row.update(smem=-1, regs=-1, spill_st=-1, spill_ld=-1, stack=-1,
                   error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}")
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    row["smem_limit"] = SMEM_LIMIT[cc]
    return row


def compile_all(archs=(90, 80), dtypes=("fp32", "fp16", "bf16", "fp64")) -> List[dict]:
    by_name = {v: k for k, v in DTYPES.items()}
    rows = []
    for r in launches(tuple(by_name[d] for d in dtypes)):
        for cc in archs:
            rows.append(compile_one(r, cc))
    return rows
