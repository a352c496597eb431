"""The ``cupy`` backend: the csrc/*.cu kernels compiled at first use by NVRTC through ``cupy.RawModule`` (CuPy
caches the binaries on disk, ``~/.cupy/kernel_cache``), launched on PyTorch's current stream on the tensors' own
memory (raw device pointers, no copies). For users without nvcc, or whose torch and CUDA toolkit do not match the
extension build. ``pip install vsr_engine[cupy]`` (cupy-cuda13x).

``call(name, *args)`` takes exactly the arguments of ``_cuda.call`` (the launcher names of csrc/vsr_kernels.h) and
launches the same kernels with the same grids as the C launchers in csrc/<op>.cu (mirrored in ``_LAUNCH`` below;
those host launchers are compiled out of the NVRTC build by ``#if VSR_HOST``). ``KERNELS`` lists every template
instantiation launched; scripts/aot_kernels.py compiles exactly these for sm_90 / sm_80 in CI.
Importing this module never imports cupy.
"""
from __future__ import annotations

import glob
import hashlib
import os
import sys
import threading
from typing import Dict, List, Optional, Tuple

import torch

_T = ("float", "__half", "__nv_bfloat16", "double")
_ACC = {"float": "float", "__half": "float", "__nv_bfloat16": "float", "double": "double"}
_I = ("int32_t", "int64_t")  # pixel_shuffle's index type: 32-bit when every offset fits
_CODE = dict(enumerate(_T))  # csrc/vsr_kernels.h dtype codes: VSR_F32, VSR_F16, VSR_BF16, VSR_F64

# every instantiation the launchers below use (template arguments spelled as in csrc/)
KERNELS: Dict[str, List[str]] = {
    "pixel_shuffle": [f"fwd_kernel<{t}, {i}>" for t in _T for i in _I] + [f"bwd_kernel<{t}, {t}, {i}>" for t in _T
                                                                          for i in _I]
    + [f"bwd_kernel<{t}, float, {i}>" for t in _T[1:3] for i in _I],
    "flow_warp": [f"{k}<{t}, {f}>" for k in ("fwd_kernel", "bwd_kernel") for t in _T
                  for f in dict.fromkeys((t, "float"))],
    "clean_step": [f"fwd_kernel<{t}>" for t in _T] + [f"bwd_kernel<{t}, {m}>" for t in _T for m in ("float", "double")],
    "dwpw_conv2d": [f"fused_kernel<{t}, {o}>" for t in _T for o in dict.fromkeys((t, _ACC[t]))]
    + [f"{k}<{t}>" for k in ("dw_kernel", "dw_bwd_x_kernel", "dw_bwd_w_kernel") for t in _T],
    "meta_upscale": [f"{k}<{t}>" for k in ("fwd_kernel", "bwd_feat_kernel", "bwd_wt_kernel") for t in _T],
    "dyn_upsample": [f"{k}<{t}>" for k in ("fwd_kernel", "bwd_kernel", "bwd_x_kernel") for t in _T],
    "deform_conv2d": [f"{k}<{t}>" for k in ("fwd_kernel", "bwd_weight_kernel") for t in ("float", "double")]
    + [f"{k}<{t}>" for k in ("fwd_tc_kernel", "bwd_weight_tc_kernel") for t in _T[1:3]]
    + [f"bwd_data_kernel<{t}>" for t in _T],
}

_lock = threading.Lock()
_state: dict = {"modules": {}}


# ---------------------------------------------------------------------------------------------------- compile
def csrc_dir() -> str:
    from . import _build
    return _build.CSRC


def cuda_include_dir() -> Optional[str]:
    """A directory with cuda_fp16.h and cuda_bf16.h for NVRTC: CUDA_HOME/CUDA_PATH, /usr/local/cuda, the CUDA
    headers of the nvidia-* wheels (what torch+cu13 installs), or triton's bundled copy."""
    cands = [os.path.join(os.environ[v], "include") for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    cands.append("/usr/local/cuda/include")
    for sp in sys.path:
        cands += sorted(glob.glob(os.path.join(sp, "nvidia", "cu1*", "include")))
        cands += [os.path.join(sp, "nvidia", "cuda_runtime", "include"),
                  os.path.join(sp, "triton", "backends", "nvidia", "include")]
    for d in cands:
        if os.path.isfile(os.path.join(d, "cuda_fp16.h")) and os.path.isfile(os.path.join(d, "cuda_bf16.h")):
            return d
    return None


def nvrtc_available() -> Tuple[bool, str]:
    """NVRTC (through cupy_backends) and the CUDA fp16/bf16 headers; no GPU or driver needed."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        ver = nvrtc.getVersion()
    except Exception as e:
        return False, f"NVRTC not loadable through cupy ({type(e).__name__}: {str(e).splitlines()[0][:160]}); " \
                      "pip install vsr_engine[cupy] (cupy-cuda13x) and nvidia-cuda-nvrtc"
    inc = cuda_include_dir()
    if inc is None:
        return False, f"NVRTC {ver[0]}.{ver[1]} found but no cuda_fp16.h/cuda_bf16.h (set CUDA_HOME)"
    return True, f"NVRTC {ver[0]}.{ver[1]}, CUDA headers {inc}"


def source(mod: str) -> str:
    """csrc/<mod>.cu with a hash of the shared headers prepended: CuPy's disk cache keys on the code string only."""
    d = csrc_dir()
    h = hashlib.sha256()
    for name in ("vsr_cuda.cuh", "vsr_kernels.h"):
        with open(os.path.join(d, name), "rb") as f:
            h.update(f.read())
    with open(os.path.join(d, f"{mod}.cu")) as f:
        return f"// vsr_engine headers {h.hexdigest()[:16]}\n" + f.read()


def options(arch: Optional[str] = None) -> List[str]:
    opts = ["-std=c++17", f"-I{csrc_dir()}", f"-I{cuda_include_dir()}"]
    if arch:
        opts.append(f"-arch={arch}")
    return opts


def nvrtc_compile(mod: str, names: List[str], arch: str, ptxas_verbose: bool = False) -> Tuple[str, Dict[str, str]]:
    """Compile csrc/<mod>.cu's kernels ``names`` to a cubin for ``arch`` (e.g. "sm_90") with NVRTC directly.
    Returns (the program log, {name expression: lowered (mangled) name}); RuntimeError with the log on failure."""
    from cupy_backends.cuda.libs import nvrtc
    prog = nvrtc.createProgram(source(mod), f"{mod}.cu", [], [])
    try:
        for n in names:
            nvrtc.addNameExpression(prog, n)
        opts = options(arch) + (["--ptxas-options=-v"] if ptxas_verbose else [])
        try:
            nvrtc.compileProgram(prog, opts)
        except Exception as e:
            raise RuntimeError(f"NVRTC {mod}.cu for {arch}: {e}\n{nvrtc.getProgramLog(prog)}") from None
        log = nvrtc.getProgramLog(prog)
        lowered = {n: nvrtc.getLoweredName(prog, n) for n in names}
        if not nvrtc.getCUBIN(prog):
            raise RuntimeError(f"NVRTC {mod}.cu for {arch}: no cubin\n{log}")
        return log, lowered
    finally:
        nvrtc.destroyProgram(prog)


# ---------------------------------------------------------------------------------------------------- runtime
def usable(device_type: str) -> Tuple[bool, str]:
    """Whether the cupy backend can run on a tensor of ``device_type`` (never compiles anything; the answer for
    CUDA tensors is worked out once per process: this is on every op call's path)."""
    if device_type != "cuda":
        return False, f"the cupy backend needs CUDA tensors (got {device_type})"
    if "usable" not in _state:
        _state["usable"] = _usable()
    return _state["usable"]


def _usable() -> Tuple[bool, str]:
    try:
        import cupy
    except Exception as e:
        return False, f"cupy not importable ({type(e).__name__}); pip install vsr_engine[cupy]"
    ok, why = nvrtc_available()
    if not ok:
        return False, why
    if not torch.cuda.is_available():
        return False, f"no CUDA device (cupy {cupy.__version__} and {why} are ready: csrc/ compiles at first use)"
    try:  # probe: NVRTC-compile csrc/runtime.cu's empty kernel (cached on disk) and launch it once
        import numpy as np
        dev = torch.cuda.current_device()
        with cupy.cuda.Device(dev):
            m = cupy.RawModule(code=source("runtime"), options=tuple(options()), backend="nvrtc",
                               name_expressions=["probe_kernel"])
            m.get_function("probe_kernel")((1,), (1,), (np.uint64(0),))
            cupy.cuda.runtime.deviceSynchronize()
    except Exception as e:
        return False, f"cupy {cupy.__version__} cannot compile or launch here ({type(e).__name__}: " \
                      f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''})"
    return True, f"cupy {cupy.__version__}, {why}"


def _module(mod: str, device: int):
    key = (mod, device)
    m = _state["modules"].get(key)
    if m is None:
        import cupy
        with _lock:
            m = _state["modules"].get(key)
            if m is None:
                with cupy.cuda.Device(device):
                    m = cupy.RawModule(code=source(mod), options=tuple(options()), backend="nvrtc",
                                       name_expressions=KERNELS[mod])
                    m.compile()
                _state["modules"][key] = m
    return m


def _launch(mod: str, kernel: str, grid, block, args, smem: int = 0) -> None:
    import cupy
    import numpy as np
    dev, stream = _ctx.device, _ctx.stream
    fn = _module(mod, dev).get_function(kernel)
    conv = []
    for a in args:
        if isinstance(a, torch.Tensor):
            conv.append(np.uint64(a.data_ptr()))
        elif a is None:
            conv.append(np.uint64(0))
        else:
            conv.append(a)
    with cupy.cuda.Device(dev), cupy.cuda.ExternalStream(stream, dev):
        fn(tuple(int(g) for g in grid), tuple(int(b) for b in block), tuple(conv), shared_mem=int(smem))


_ctx = threading.local()  # device and stream of the current call


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _i64(v):
    import numpy as np
    return np.int64(v)


def _i32(v):
    import numpy as np
    return np.int32(v)


def _acc(tname: str, v: float):
    import numpy as np
    return np.float64(v) if tname == "double" else np.float32(v)


def _b(v):
    import numpy as np
    return np.bool_(bool(v))


# ------------------------------------------------------------------ launchers: csrc/<op>.cu host code, mirrored
def _pixel_shuffle_fwd(x, bias, out, N, C, H, W, r, act, slope, dt):
    t = _CODE[dt]
    planes, bx = N * C, _cdiv(H * W * r * r, 256)
    i = _I[planes * H * W * r * r >= 2 ** 31]
    for p0 in range(0, planes, 65535):
        _launch("pixel_shuffle", f"fwd_kernel<{t}, {i}>", (bx, min(65535, planes - p0)), (256,),
                (x, bias, out, _i64(p0), _i64(C), _i64(H), _i64(W), _i32(r), _b(act), _acc(t, slope)))


def _pixel_shuffle_bwd(grad, x, bias, gx, N, C, H, W, r, act, slope, dt, gdt):
    t = _CODE[dt]
    g = t if gdt == dt else "float"
    planes, bx = N * C * r * r, _cdiv(H * W, 256)
    i = _I[planes * H * W >= 2 ** 31]
    for p0 in range(0, planes, 65535):
        _launch("pixel_shuffle", f"bwd_kernel<{t}, {g}, {i}>", (bx, min(65535, planes - p0)), (256,),
                (grad, x, bias, gx, _i64(p0), _i64(C), _i64(H), _i64(W), _i32(r), _b(act), _acc(t, slope)))


def _flow_types(dt, fdt):
    t, f = _CODE[dt], _CODE[fdt]
    if f not in (t, "float"):
        raise ValueError(f"flow_warp (cupy): flow dtype {f} with data {t} is not built; use the same dtype or fp32")
    return t, f


def _flow_warp_fwd(x, flow, out, N, C, H, W, sfn, sfh, sfw, sfc, border, align, dt, fdt):
    t, f = _flow_types(dt, fdt)
    chunks = _cdiv(C, 16)
    if N * chunks > 65535:
        raise ValueError("flow_warp_fwd: N * ceil(C/16) > 65535")
    _launch("flow_warp", f"fwd_kernel<{t}, {f}>", (_cdiv(H * W, 256), N * chunks), (256,),
            (x, flow, out, _i64(C), _i64(H), _i64(W), _i64(sfn), _i64(sfh), _i64(sfw), _i64(sfc), _b(border),
             _b(align), _i64(chunks)))


def _flow_warp_bwd(x, flow, grad, gx, gflow, N, C, H, W, sfn, sfh, sfw, sfc, border, align, dt, fdt):
    t, f = _flow_types(dt, fdt)
    if N > 65535:
        raise ValueError("flow_warp_bwd: N > 65535")
    _launch("flow_warp", f"bwd_kernel<{t}, {f}>", (_cdiv(H * W, 256), N), (256,),
            (x, flow, grad, gx, gflow, _i64(C), _i64(H), _i64(W), _i64(sfn), _i64(sfh), _i64(sfw), _i64(sfc),
             _b(border), _b(align)))


def _clean_step_fwd(x, r, out, partials, numel, nblocks, dt):
    _launch("clean_step", f"fwd_kernel<{_CODE[dt]}>", (nblocks,), (256,), (x, r, out, partials, _i64(numel)))


def _clean_step_bwd(grad, r, gmean, gr, numel, dt, gmdt):
    if numel == 0:
        return
    m = {0: "float", 3: "double"}[gmdt]
    _launch("clean_step", f"bwd_kernel<{_CODE[dt]}, {m}>", (min(_cdiv(numel, 256), 4096),), (256,),
            (grad, r, gmean, gr, _i64(numel)))


def _stride_blocks(total):
    return max(1, min(_cdiv(total, 256), 65535))


def _dwpw_fwd(x, dww, dwb, pww, pwb, res, grad, out, N, C, O, H, W, k, act, slope, dt):
    t = _CODE[dt]
    a = _ACC[t]
    smem = (8 if a == "double" else 4) * (32 + min(O, 128)) * 32
    name = f"fused_kernel<{t}, {a if grad is not None else t}>"
    _launch("dwpw_conv2d", name, (_cdiv(H * W, 32), _cdiv(O, 128), N), (256,),
            (x, dww, dwb, pww, pwb, None if grad is not None else res, grad, out, _i64(C), _i64(O), _i64(H),
             _i64(W), _i32(k), _i32(act), _acc(t, slope)), smem)


def _dw_fwd(x, dww, dwb, y, N, C, H, W, k, dt):
    total = N * C * H * W
    if total:
        _launch("dwpw_conv2d", f"dw_kernel<{_CODE[dt]}>", (_stride_blocks(total),), (256,),
                (x, dww, dwb, y, _i64(N), _i64(C), _i64(H), _i64(W), _i32(k)))


def _dw_bwd(gy, x, dww, gx, part, N, C, H, W, k, splits, dt):
    t = _CODE[dt]
    total = N * C * H * W
    if gx is not None and total > 0:
        _launch("dwpw_conv2d", f"dw_bwd_x_kernel<{t}>", (_stride_blocks(total),), (256,),
                (gy, dww, gx, _i64(N), _i64(C), _i64(H), _i64(W), _i32(k)))
    if part is not None and C > 0:
        _launch("dwpw_conv2d", f"dw_bwd_w_kernel<{t}>", (C, splits), (64,),
                (gy, x, part, _i64(N), _i64(C), _i64(H), _i64(W), _i32(k)), (8 if t == "double" else 4) * k * k * 64)


def _meta_fwd(feat, wt, ih, ch, iw, cw, out, N, C, H, W, OH, OW, DW, O, k, dt):
    if N * OH * OW:
        _launch("meta_upscale", f"fwd_kernel<{_CODE[dt]}>", (_cdiv(OH * OW, 256), N), (256,),
                (feat, wt, ih, ch, iw, cw, out, _i64(C), _i64(H), _i64(W), _i64(OH), _i64(OW), _i64(DW), _i32(O),
                 _i32(k)))


def _meta_bwd(grad, feat, wt, ih, ch, oh_, sh, iw, cw, ow_, sw, gfeat, gwt, N, C, H, W, OH, OW, DH, DW, O, k, dt):
    t = _CODE[dt]
    kt = C * k * k
    if gfeat is not None and N * OH * OW > 0:
        _launch("meta_upscale", f"bwd_feat_kernel<{t}>", (_cdiv(OH * OW, 256), N), (256,),
                (grad, wt, ih, ch, iw, cw, gfeat, _i64(C), _i64(H), _i64(W), _i64(OH), _i64(OW), _i64(DW), _i32(O),
                 _i32(k)))
    if gwt is not None and DH * DW > 0 and kt > 0:
        _launch("meta_upscale", f"bwd_wt_kernel<{t}>", (DH * DW, _cdiv(kt, 256)), (256,),
                (grad, feat, ih, oh_, sh, iw, ow_, sw, gwt, _i64(N), _i64(C), _i64(H), _i64(W), _i64(OH), _i64(OW),
                 _i64(DW), _i32(O), _i32(k)))


def _dyn_fwd(x, f, res, out, N, C, H, W, r, dt):
    if N > 65535:
        raise ValueError("dyn_upsample_fwd: N > 65535")
    if N * C * H * W:
        _launch("dyn_upsample", f"fwd_kernel<{_CODE[dt]}>", (_cdiv(H * W, 256), r * r, N), (256,),
                (x, f, res, out, _i64(C), _i64(H), _i64(W), _i32(r)))


def _dyn_bwd(x, f, grad, gx, gf, gres, a, N, C, H, W, r, dt):
    if N * C > 65535:
        raise ValueError("dyn_upsample_bwd: N * C > 65535")
    if N * C * H * W == 0:
        return
    t = _CODE[dt]
    bx = _cdiv(H * W, 256)
    _launch("dyn_upsample", f"bwd_kernel<{t}>", (bx, N), (256,),
            (x, f, grad, gf, gres, a if gx is not None else None, _i64(C), _i64(H), _i64(W), _i32(r)))
    if gx is not None:
        _launch("dyn_upsample", f"bwd_x_kernel<{t}>", (bx, N * C), (256,), (a, gx, _i64(C), _i64(H), _i64(W)))


# csrc/deform_conv2d.cu's tiles: kTP pixels, kKC channels, kTO outputs
_DC_TP, _DC_KC, _DC_TO = 64, 16, 64


def _dc_sizes(N, Cin, H, W, Cout, Ho, Wo, G, groups, KH, KW, sh, sw, ph, pw, dh, dw):
    """The kernels' DC_ARGS (int64 sizes, int32 geometry), after the C launchers' checks."""
    if min(N + 1, Cin, H, W, Cout, Ho, Wo, G, groups, KH, KW, sh, sw, dh, dw, ph + 1, pw + 1) < 1 or \
            Cin % groups or Cout % groups or Cin % G or N * groups > 65535 or _cdiv(Cout // groups, _DC_TO) > 65535:
        raise ValueError("deform_conv2d (cupy): invalid argument (size out of range)")
    return tuple(_i64(v) for v in (Cin, H, W, Cout, Ho, Wo)) + tuple(_i32(v) for v in (G, groups, KH, KW, sh, sw,
                                                                                         ph, pw, dh, dw))


def _dc_fwd(x, off, msk, w, bias, out, N, Cin, H, W, Cout, Ho, Wo, G, groups, KH, KW, sh, sw, ph, pw, dh, dw, dt):
    d = _dc_sizes(N, Cin, H, W, Cout, Ho, Wo, G, groups, KH, KW, sh, sw, ph, pw, dh, dw)
    if N:
        t = _CODE[dt]  # fp16 / bf16: the tensor-core forward, as csrc's fwd<T> chooses
        _launch("deform_conv2d", f"{'fwd_tc_kernel' if t in _T[1:3] else 'fwd_kernel'}<{t}>",
                (_cdiv(Ho * Wo, _DC_TP), _cdiv(Cout // groups, _DC_TO), N * groups), (256,),
                (x, off, msk, w, bias, out) + d)


def _dc_bwd(x, off, msk, w, grad, gx, goff, gmsk, part, N, Cin, H, W, Cout, Ho, Wo, G, groups, KH, KW, sh, sw, ph,
            pw, dh, dw, splits, dt):
    d = _dc_sizes(N, Cin, H, W, Cout, Ho, Wo, G, groups, KH, KW, sh, sw, ph, pw, dh, dw)
    if part is not None and (splits < 1 or groups * splits > 65535):
        raise ValueError("deform_conv2d (cupy): invalid argument (splits out of range)")
    if not N:
        return
    t = _CODE[dt]
    if gx is not None or goff is not None or gmsk is not None:
        _launch("deform_conv2d", f"bwd_data_kernel<{t}>", (_cdiv(Ho * Wo, _DC_TP), N * groups), (256,),
                (x, off, msk, w, grad, gx, goff, gmsk) + d)
    if part is not None:
        _launch("deform_conv2d", f"{'bwd_weight_tc_kernel' if t in _T[1:3] else 'bwd_weight_kernel'}<{t}>",
                (KH * KW * _cdiv(Cin // groups, _DC_KC), _cdiv(Cout // groups, _DC_TO), groups * splits), (256,),
                (x, off, msk, grad, part, _i64(N), _i32(splits)) + d)


_LAUNCH = {"pixel_shuffle_fwd": _pixel_shuffle_fwd, "pixel_shuffle_bwd": _pixel_shuffle_bwd,
           "flow_warp_fwd": _flow_warp_fwd, "flow_warp_bwd": _flow_warp_bwd,
           "clean_step_fwd": _clean_step_fwd, "clean_step_bwd": _clean_step_bwd,
           "dwpw_fwd": _dwpw_fwd, "dw_fwd": _dw_fwd, "dw_bwd": _dw_bwd,
           "meta_upscale_fwd": _meta_fwd, "meta_upscale_bwd": _meta_bwd,
           "dyn_upsample_fwd": _dyn_fwd, "dyn_upsample_bwd": _dyn_bwd,
           "deform_conv2d_fwd": _dc_fwd, "deform_conv2d_bwd": _dc_bwd}


def call(name: str, *args) -> None:
    """``_cuda.call``'s contract: the launcher ``name`` of csrc/vsr_kernels.h with tensors (or None) and sizes."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    dev = tensors[0].device
    if dev.type != "cuda":
        raise ValueError(f"{name}: the cupy backend takes CUDA tensors, got {dev}")
    for a in tensors:
        if a.device != dev:
            raise ValueError(f"{name}: tensors on {a.device} and {dev}")
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    _ctx.device, _ctx.stream = idx, torch.cuda.current_stream(dev).cuda_stream
    _LAUNCH[name](*args)
