"""Ahead-of-time compile of every Triton kernel of vsr_engine.ops for sm_90 / sm_80 without a GPU.

The ops' own triton launch code runs on ``meta`` tensors; ``JITFunction.run`` is replaced by a recorder, so every
launch (kernel, argument types, block constexprs, num_warps) is the one a CUDA run would make -- the interpreter's
block sizes are not used because this module refuses to run under ``TRITON_INTERPRET=1``. Two sets of launches:
  * real shapes (64 channels at 180x320 and 540x960, the tail at 2x / 4x): the launches the models make;
  * the sweep: each op's launch-configuration function -- the one its launcher calls (dwpw_conv2d._fwd_config /
    _dw_config, flow_warp._blocks, pixel_shuffle._launch_config, clean_step._block, meta_upscale._dot_blocks /
    _wt_blocks / _blocks) -- evaluated over SWEEP_CHANNELS x SWEEP_PIXELS x dtypes; for every distinct
    configuration it returns, the launcher runs once at the first shape that gives it. So every block / dot
    configuration the code can launch is compiled (other constexprs -- activation, padding mode, kernel size, r --
    at the values of these shapes); ``sweep_gaps()`` checks that the grid reaches every configuration.
Each distinct launch is compiled with ``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` in a
fresh cache directory (a cached kernel would skip the front end's checks), with tl.dot held to triton 3.6's shape
rule (``vsr_engine.ops._util.strict_min_dot_size``: K >= 16 -- the wheel here may accept less), and its PTX is
re-assembled with the wheel's ``ptxas -v`` for registers, spills and stack; shared memory comes from the metadata.

Library use: ``launches()``, ``sweep_cases()`` and ``compile_all(archs)``; run as a script through
scripts/aot_kernels.py.
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
import triton.language as tl  # noqa: E402
from triton.runtime.jit import JITFunction  # noqa: E402

DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64",
          torch.int32: "i32", torch.int64: "i64"}
DTYPES_F = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# shared memory per block, opt-in maximum (CUDA programming guide, compute capabilities table)
SMEM_LIMIT = {90: 227 * 1024, 80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024}


@contextlib.contextmanager
def recording(out: List[dict]):
    """Replace kernel launches by a record of them (kernel, signature, constexprs, grid), specialised the way
    triton's launcher specialises the argument values: an integer equal to 1 becomes the constexpr 1 (``ones``), an
    integer divisible by 16 and every tensor get ``tt.divisibility = 16`` (``div``; tensors assumed 16-byte
    aligned, as the caching allocator returns them)."""
    orig = JITFunction.run

    def run(self, *args, grid, warmup, **kwargs):
        params = self.params
        bound = dict(zip([p.name for p in params], args))
        opts = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
        bound.update(kwargs)
        sig, const, div, ones = {}, {}, set(), []
        for p in params:
            v = bound.get(p.name, p.default if hasattr(p, "default") else None)
            spec = not getattr(p, "do_not_specialize", False)
            if p.is_constexpr:
                const[p.name] = v
                sig[p.name] = "constexpr"
            elif isinstance(v, torch.Tensor):
                sig[p.name] = "*" + DTYPES[v.dtype]
                if not getattr(p, "do_not_specialize_on_alignment", False):
                    div.add(p.name)
            elif v is None:
                const[p.name] = None
                sig[p.name] = "constexpr"
            elif isinstance(v, bool):
                sig[p.name] = "i1"
            elif isinstance(v, int):
                if spec and v == 1:
                    const[p.name] = 1
                    sig[p.name] = "constexpr"
                    ones.append(p.name)
                    continue
                sig[p.name] = "i32" if -2 ** 31 <= v < 2 ** 31 else "i64"
                if spec and v % 16 == 0:
                    div.add(p.name)
            elif isinstance(v, float):
                sig[p.name] = "fp32"
            else:
                raise TypeError(f"{self.__name__}: cannot type argument {p.name}={v!r}")
        g = grid(bound) if callable(grid) else grid
        out.append({"fn": self, "kernel": self.__name__, "module": self.fn.__module__.rsplit(".", 1)[-1],
                    "sig": sig, "const": const, "div": div, "ones": ones, "grid": tuple(int(x) for x in g),
                    "opts": opts})

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

    def fwp(h, w, flow_dtype):
        """flow_warp as the models launch it: flow (N, 2, H, W) permuted to (N, H, W, 2) (unit stride on W, not on
        the pair), fp32 flows beside 16-bit features, d/dx alone and d/dflow alone as well as both."""
        def go(dt):
            fd = dt if flow_dtype is None else flow_dtype
            x, fl = t(2, 64, h, w, dtype=dt), t(2, 2, h, w, dtype=fd).permute(0, 2, 3, 1)
            for pm in ("zeros", "border"):
                flow_warp._triton_fwd(x, fl, pm, True)
                for need in ((True, True), (True, False), (False, True)):
                    flow_warp._triton_bwd(x, x, fl, pm, True, *need)
        return go

    def dc(h, w, cin, cout, dg, mask):
        def go(dt):
            import importlib
            deform = importlib.import_module("vsr_engine.ops.deform_conv2d")
            x, off = t(1, cin, h, w, dtype=dt), t(1, 2 * dg * 9, h, w, dtype=dt)
            wt, b = t(cout, cin, 3, 3, dtype=dt), t(cout, dtype=dt)
            m = t(1, dg * 9, h, w, dtype=dt) if mask else None
            deform._triton_fwd(x, off, wt, b, m, (1, 1), (1, 1), (1, 1), h, w)
            deform._triton_bwd(t(1, cout, h, w, dtype=dt), x, off, wt, m, (1, 1), (1, 1), (1, 1),
                               [True, True, True, bool(mask)])
        return go

    cases = []
    for h, w in ((180, 320), (270, 480)):
        cases += [(f"flow_warp 64ch {h}x{w} permuted flow", fwp(h, w, None)),
                  (f"flow_warp 64ch {h}x{w} permuted fp32 flow", fwp(h, w, torch.float32)),
                  (f"deform_conv2d 64->64 dg8 {h}x{w} (TDAN)", dc(h, w, 64, 64, 8, False)),
                  (f"deform_conv2d 64->64 dg8 mask {h}x{w} (DCNv2)", dc(h, w, 64, 64, 8, True)),
                  (f"deform_conv2d 64->64 dg1 {h}x{w}", dc(h, w, 64, 64, 1, False))]
    cases += [("deform_conv2d 3->8 dg1 64x64", dc(64, 64, 3, 8, 1, True)),
              ("deform_conv2d 128->64 dg16 64x64", dc(64, 64, 128, 64, 16, False))]
    for h, w in ((180, 320), (540, 960)):
        cases += [(f"flow_warp 64ch {h}x{w}", fw(h, w)), (f"dwpw_conv2d 64->64 {h}x{w}", dw(h, w, 64, 64)),
                  (f"pixel_shuffle x2 64ch {h}x{w}", ps(h, w, 2, 64)),
                  (f"meta_upscale x2.3 64ch {h}x{w}", mu(h, w, 2.3)), (f"meta_upscale x4 64ch {h}x{w}", mu(h, w, 4.0))]
    def du(h, w, r, c=3):
        def go(dt):
            dyn_upsample = importlib.import_module("vsr_engine.ops.dyn_upsample")
            x, f, res = t(1, c, h, w, dtype=dt), t(1, 25 * r * r, h, w, dtype=dt), t(1, c * r * r, h, w, dtype=dt)
            out = dyn_upsample._triton_fwd(x, f, res, r)
            dyn_upsample._triton_bwd(out, x, f, res, r, [True, True, True])
            dyn_upsample._triton_bwd(out, x, f, res, r, [False, True, False])
        return go

    cases += [(f"dyn_upsample x{r} 3ch 180x320 (DUF)", du(180, 320, r)) for r in (2, 3, 4)]
    cases += [("pixel_shuffle x2 64ch 360x640 (tail 2x)", ps(360, 640, 2, 64)),
              ("pixel_shuffle x2 3ch 720x1280 (tail 4x, rgb)", ps(720, 1280, 2, 3)),
              ("clean_step 3ch 720x1280", cs(720, 1280)), ("dwpw_conv2d 32->64 180x320", dw(180, 320, 32, 64))]
    return cases


# Where the sweep evaluates the launch-configuration functions: every count up to 17 and each power of two with its
# neighbours up to 2**12 channels / 2**32 elements. The functions change value only where next_pow2, a min / max
# clamp or a threshold does -- at powers of two (16, 32, 64, ... ; INT64 at 2**31) -- so this reaches all of them.
SWEEP_CHANNELS = sorted(set(range(1, 18)) | {(1 << k) + d for k in range(5, 13) for d in (-1, 0, 1)})
SWEEP_PIXELS = sorted({max(1, (1 << k) + d) for k in range(0, 33) for d in (-1, 0, 1)})


def _first_shapes(keys) -> Dict[tuple, tuple]:
    """{configuration: first argument tuple giving it} over an iterable of (configuration, arguments)."""
    first: Dict[tuple, tuple] = {}
    for key, args in keys:
        first.setdefault(key, args)
    return first


def sweep_cases(dt: torch.dtype) -> List[Tuple[str, Callable[[], None]]]:
    """(label, driver) for every distinct launch configuration of every op in dtype ``dt`` (see the module doc)."""
    import importlib
    clean_step, dwpw_conv2d, flow_warp, meta_upscale, pixel_shuffle = (
        importlib.import_module(f"vsr_engine.ops.{n}") for n in
        ("clean_step", "dwpw_conv2d", "flow_warp", "meta_upscale", "pixel_shuffle"))
    m = torch.device("meta")
    cdt = torch.float64 if dt == torch.float64 else torch.float32

    def t(*shape, dtype=dt):
        return torch.empty(shape, device=m, dtype=dtype)

    cases = []
    # dwpw_conv2d: (C -> O channels, 1 x HW pixels); forward, gradient-mode forward, depthwise and its backward
    dw = _first_shapes(((dwpw_conv2d._fwd_config(c, o, hw, dt), dwpw_conv2d._dw_config(c, hw)), (c, o, hw))
                       for c in SWEEP_CHANNELS for o in SWEEP_CHANNELS for hw in SWEEP_PIXELS if hw < 1 << 25)
    for key, (c, o, hw) in dw.items():
        def go(c=c, o=o, hw=hw):
            x, dww, dwb, pww, pwb = t(1, c, 1, hw), t(c, 1, 3, 3), t(c), t(o, c, 1, 1), t(o)
            dwpw_conv2d._triton_fwd(x, dww, dwb, pww, pwb, t(1, o, 1, hw), 2)
            dwpw_conv2d._triton_bwd(t(1, o, 1, hw), x, dww, dwb, pww, pwb, 2, [True] * 5)
        cases.append((f"dwpw_conv2d sweep {c}->{o} 1x{hw}", go))
    # flow_warp: C channels, 1 x HW pixels
    fw = _first_shapes((flow_warp._blocks(c, hw), (c, hw)) for c in SWEEP_CHANNELS for hw in SWEEP_PIXELS
                       if hw < 1 << 25)
    for key, (c, hw) in fw.items():
        def go(c=c, hw=hw):
            x, fl = t(1, c, 1, hw), t(1, 1, hw, 2)
            flow_warp._triton_fwd(x, fl, "border", True)
            flow_warp._triton_bwd(x, x, fl, "border", True, True, True)
        cases.append((f"flow_warp sweep {c}ch 1x{hw}", go))
    # pixel_shuffle (r = 2, 1 channel out): 4 x HW elements in and out
    ps = _first_shapes((pixel_shuffle._launch_config(4 * hw), hw) for hw in SWEEP_PIXELS)
    for key, hw in ps.items():
        def go(hw=hw):
            x, b = t(1, 4, 1, hw), t(4)
            out = t(1, 1, 2, 2 * hw)
            pixel_shuffle._triton_fwd(x, 2, b, True, 0.1)
            pixel_shuffle._triton_bwd(out, x, 2, b, True, 0.1, True)
            pixel_shuffle._triton_bwd(out, None, 2, None, False, 0.1, False)
        cases.append((f"pixel_shuffle sweep x2 {4 * hw} elements", go))
    # clean_step: N elements
    cs = _first_shapes((clean_step._block(n), n) for n in SWEEP_PIXELS)
    for key, n in cs.items():
        def go(n=n):
            x = t(1, 1, 1, n)
            clean_step._triton_fwd(x, x)
            clean_step._triton_bwd(x, t(dtype=cdt), x)
        cases.append((f"clean_step sweep {n} elements", go))
    # meta_upscale: O outputs (a constexpr; the triton path refuses O > MAX_O_TRITON), C channels; the pixel counts
    # come from the class tables of a small image, so the pixel sweep goes through the config functions' npix
    dot = meta_upscale._dot_mode(dt)
    mu = _first_shapes(((meta_upscale._dot_blocks(o, dot, npix), meta_upscale._wt_blocks(o, dot, npix),
                         meta_upscale._blocks(c, o, npix)), (c, o))
                       for o in SWEEP_CHANNELS if o <= meta_upscale.MAX_O_TRITON for c in SWEEP_CHANNELS
                       for npix in SWEEP_PIXELS)
    for key, (c, o) in mu.items():
        def go(c=c, o=o):
            h, w, scale = 6, 7, 2.5
            tb = {k: (v.to(m) if isinstance(v, torch.Tensor) else v)
                  for k, v in meta_upscale._tables(h, w, scale, torch.device("cpu")).items()}
            oh, ow = meta_upscale.meta_out_size(h, w, scale)
            wt = t(tb["off_h"].numel() * tb["off_w"].numel(), o, c * 9, dtype=cdt)
            feat = t(1, c, h, w)
            meta_upscale._triton_apply(feat, wt, tb, 3, oh, ow)
            meta_upscale._triton_apply_bwd(t(1, o, oh, ow), feat, wt, tb, 3, True, True)
        cases.append((f"meta_upscale sweep {c}ch O={o}", go))
    # dyn_upsample: C channels (r = 4, the DUF default; r = 2 / 3 are in the real-shape cases), 1 x HW pixels
    dyn_upsample = importlib.import_module("vsr_engine.ops.dyn_upsample")
    du = _first_shapes(((dyn_upsample._launch_config(c, hw), dyn_upsample._launch_config(c, hw, bwd=True)), (c, hw))
                       for c in SWEEP_CHANNELS for hw in SWEEP_PIXELS)
    for key, (c, hw) in du.items():
        def go(c=c, hw=hw):
            x, f, res = t(1, min(c, dyn_upsample.MAX_C_TRITON), 1, hw), t(1, 400, 1, hw), t(1, 16 * min(c, 4), 1, hw)
            out = dyn_upsample._triton_fwd(x, f, res, 4)
            dyn_upsample._triton_bwd(out, x, f, res, 4, [True, True, True])
        cases.append((f"dyn_upsample sweep {c}ch 1x{hw}", go))
    return cases


def _config_fns(dt: torch.dtype):
    """{op: (config function of (c, o, n), which of c / o / n it reads)} -- the functions the launchers call."""
    import importlib
    clean_step, dwpw_conv2d, flow_warp, meta_upscale, pixel_shuffle = (
        importlib.import_module(f"vsr_engine.ops.{n}") for n in
        ("clean_step", "dwpw_conv2d", "flow_warp", "meta_upscale", "pixel_shuffle"))
    dyn_upsample = importlib.import_module("vsr_engine.ops.dyn_upsample")
    dot = meta_upscale._dot_mode(dt)
    return {
        "dwpw_conv2d": lambda c, o, n: (dwpw_conv2d._fwd_config(c, o, n, dt), dwpw_conv2d._dw_config(c, n)),
        "flow_warp": lambda c, o, n: flow_warp._blocks(c, n),
        "pixel_shuffle": lambda c, o, n: pixel_shuffle._launch_config(4 * n),
        "clean_step": lambda c, o, n: clean_step._block(n),
        "dyn_upsample": lambda c, o, n: (dyn_upsample._launch_config(c, n), dyn_upsample._launch_config(c, n, True)),
        "meta_upscale": lambda c, o, n: (meta_upscale._dot_blocks(o, dot, n), meta_upscale._wt_blocks(o, dot, n),
                                         meta_upscale._blocks(c, o, n)) if o <= meta_upscale.MAX_O_TRITON else None,
    }


def sweep_gaps(samples: int = 20000, seed: int = 0) -> List[str]:
    """Configurations the launch-configuration functions return outside the sweep's grid: every C, O <= 130 at
    sampled pixel counts, and ``samples`` log-uniform random (C, O, N) up to 2**13 channels / 2**34 elements, per
    dtype. Empty when SWEEP_CHANNELS x SWEEP_PIXELS reaches every configuration (tests/ops/test_aot_kernels.py)."""
    import random
    rng = random.Random(seed)
    gaps = []
    for dt in DTYPES_F:
        fns = _config_fns(dt)
        grid = {op: {fn(c, o, n) for c in SWEEP_CHANNELS for o in SWEEP_CHANNELS for n in SWEEP_PIXELS}
                for op, fn in fns.items()}
        pts = [(c, o, rng.choice(SWEEP_PIXELS) + rng.randrange(3)) for c in range(1, 131) for o in range(1, 131)]
        pts += [(int(2 ** rng.uniform(0, 13)), int(2 ** rng.uniform(0, 13)), int(2 ** rng.uniform(0, 34)))
                for _ in range(samples)]
        for op, fn in fns.items():
            for c, o, n in pts:
                cfg = fn(c, o, n)
                if cfg not in grid[op]:
                    gaps.append(f"{op} {DTYPES[dt]} C={c} O={o} N={n}: {cfg}")
                    grid[op].add(cfg)  # report each missing configuration once
    return gaps


def launches(dtypes=(torch.float32, torch.float16, torch.bfloat16, torch.float64), sweep: bool = True) -> List[dict]:
    """Every distinct launch the ops make at the real shapes and (``sweep``) in the configuration sweep, per dtype:
    dicts with kernel/sig/const/opts/cases."""
    seen: Dict[tuple, dict] = {}
    for dt in dtypes:
        for label, go in [(lb, lambda g=g, dt=dt: g(dt)) for lb, g in _cases()] + (sweep_cases(dt) if sweep else []):
            rec: List[dict] = []
            with recording(rec):
                go()
            for r in rec:
                key = (r["module"], r["kernel"], tuple(sorted(r["sig"].items())),
                       tuple(sorted((k, repr(v)) for k, v in r["const"].items())), tuple(sorted(r["opts"].items())),
                       tuple(sorted(r["div"])))
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


@contextlib.contextmanager
def strict_dot_rule():
    """tl.dot held to triton 3.6's block-shape minima (K >= 16) whatever this wheel's own rule is."""
    from triton.backends.nvidia import compiler as nv
    from vsr_engine.ops._util import strict_min_dot_size
    orig = nv.min_dot_size
    nv.min_dot_size = lambda target: strict_min_dot_size(orig(target))
    try:
        yield
    finally:
        nv.min_dot_size = orig


def compile_one(r: dict, cc: int) -> dict:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    ints = [k for k, t in r["sig"].items() if t in ("i32", "i64")]
    ones = r.get("ones", [])
    row = {"source": "triton", "module": r["module"], "kernel": r["kernel"], "dtype": r["dtype"], "arch": f"sm_{cc}",
           "config": " ".join([f"{k}={v}" for k, v in sorted(r["const"].items())
                               if k.startswith("BLOCK") or k in ("DOT", "INT64", "CDT", "NGC", "CGC")]
                              + ([f"=1:{','.join(ones)}"] if ones else [])
                              + [f"%16:{','.join(k for k in ints if k in r.get('div', ())) or '-'}"]),
           "num_warps": r["opts"].get("num_warps", 4), "cases": "; ".join(sorted(r["cases"]))}
    t0 = time.perf_counter()
    try:
        names = list(r["sig"])
        attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n in r.get("div", ())}
        src = ASTSource(fn=r["fn"], signature=r["sig"], constexprs=r["const"], attrs=attrs)
        opts = {k: v for k, v in r["opts"].items()}
        k = triton.compile(src, target=GPUTarget("cuda", cc, 32), options=opts or None)
        md = k.metadata
        row["smem"] = int(getattr(md, "shared", 0))
        arch = f"sm_{cc}a" if cc >= 90 else f"sm_{cc}"
        row.update(ptxas_usage(k.asm["ptx"], arch, cc))
        row["error"] = ""
    except Exception as e:  # a compile error is a row, the test fails on it
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        why = lines[0] if len(lines) < 2 else f"{lines[0]} ... {lines[-1]}"  # CompilationError: where ... what
        row.update(smem=-1, regs=-1, spill_st=-1, spill_ld=-1, stack=-1, error=f"{type(e).__name__}: {why[:300]}")
    row["compile_s"] = round(time.perf_counter() - t0, 2)
    row["smem_limit"] = SMEM_LIMIT[cc]
    return row


@triton.jit
def _dot_probe(a_ptr, o_ptr, K: tl.constexpr):
    """[16, K] @ [K, 16] in fp32 (ieee): what dwpw_conv2d's fp32 forward did with an 8-channel chunk."""
    a = tl.load(a_ptr + tl.arange(0, 16)[:, None] * K + tl.arange(0, K)[None, :])
    b = tl.load(a_ptr + tl.arange(0, K)[:, None] * 16 + tl.arange(0, 16)[None, :])
    tl.store(o_ptr + tl.arange(0, 16)[:, None] * 16 + tl.arange(0, 16)[None, :], tl.dot(a, b, input_precision="ieee"))


def dot_rule_probe(cc: int = 90) -> Dict[int, str]:
    """{K: compile error ('' if it compiled)} for the fp32 probe at K = 8 and 16, compiled as compile_all does:
    K = 8 must fail (triton 3.6's rule), whatever this wheel accepts on its own."""
    out = {}
    with _fresh_cache(), strict_dot_rule():
        for k in (8, 16):
            r = {"fn": _dot_probe, "kernel": "_dot_probe", "module": "aot_triton", "dtype": "fp32", "cases": set(),
                 "sig": {"a_ptr": "*fp32", "o_ptr": "*fp32", "K": "constexpr"}, "const": {"K": k}, "opts": {}}
            out[k] = compile_one(r, cc)["error"]
    return out


@contextlib.contextmanager
def _fresh_cache():
    """An empty TRITON_CACHE_DIR for the compiles (a cache hit would skip the front end and its checks)."""
    old = os.environ.get("TRITON_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="aot_triton_cache") as cache:
        os.environ["TRITON_CACHE_DIR"] = cache
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = old


def compile_all(archs=(90, 80), dtypes=("fp32", "fp16", "bf16", "fp64"), sweep: bool = True) -> List[dict]:
    """One row per (distinct launch, arch), compiled in a fresh triton cache directory under the strict dot rule."""
    by_name = {v: k for k, v in DTYPES.items()}
    rows = []
    with _fresh_cache(), strict_dot_rule():
        for r in launches(tuple(by_name[d] for d in dtypes), sweep=sweep):
            for cc in archs:
                rows.append(compile_one(r, cc))
    return rows
