"""Build ``vsr_engine._C`` (the csrc/ CUDA kernels) with nvcc; used by setup.py and by the run-time JIT.

Design: every ``csrc/<op>.cu`` exposes ``extern "C"`` launchers that take raw device pointers, sizes, a dtype
code and a ``cudaStream_t`` (declared in ``csrc/vsr_kernels.h``); ``csrc/cuda_bindings.cpp`` wraps them with
pybind11. Nothing includes a torch header, so the extension builds with any torch wheel (the CPU wheel has no
CUDA headers) and links the CUDA runtime statically (``--cudart static``): the .so needs only the NVIDIA driver.
Tensor work (allocation, shapes, dtype checks, streams) stays in Python, in each op's file.

Standard library only (setup.py loads this file by path, before torch may be importable).
"""
from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CSRC = os.path.join(ROOT, "csrc")
# compiled for these when nothing else is said: A100, A10/3090, L4/4090, H100/H200, + PTX for newer parts
DEFAULT_ARCHS = ("80", "86", "89", "90+PTX")


def cuda_sources(csrc: str = CSRC) -> List[str]:
    return sorted(glob.glob(os.path.join(csrc, "*.cu")))


def binding_source(csrc: str = CSRC) -> str:
    return os.path.join(csrc, "cuda_bindings.cpp")


def headers(csrc: str = CSRC) -> List[str]:
    return sorted(glob.glob(os.path.join(csrc, "*.h")) + glob.glob(os.path.join(csrc, "*.cuh")))


def find_nvcc() -> Optional[str]:
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    if os.path.isfile("/usr/local/cuda/bin/nvcc"):
        return "/usr/local/cuda/bin/nvcc"
    return None


def cuda_include_dir(nvcc: Optional[str] = None) -> Optional[str]:
    """The CUDA toolkit's include directory (nvcc may be a wrapper script elsewhere on PATH)."""
    cands = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = nvcc or find_nvcc()
    if nvcc:
        cands.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    cands += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for home in cands:
        if home and os.path.isfile(os.path.join(home, "include", "cuda_fp16.h")):
            return os.path.join(home, "include")
    return None


def parse_archs(spec: str) -> List[str]:
    """``"80;90"``, ``"8.0 9.0+PTX"``, ``"sm_90"`` -> ``["80", "90+PTX"]``."""
    out = []
    for tok in spec.replace(",", ";").replace(" ", ";").split(";"):
        tok = tok.strip().lower().replace("sm_", "").replace("compute_", "")
        if not tok:
            continue
        ptx = tok.endswith("+ptx")
        tok = tok.replace("+ptx", "").replace(".", "")
        if tok.isdigit():
            out.append(tok + ("+PTX" if ptx else ""))
    return out


def archs_from_env() -> Optional[List[str]]:
    for var in ("VSR_CUDA_ARCHS", "TORCH_CUDA_ARCH_LIST"):
        if os.environ.get(var):
            got = parse_archs(os.environ[var])
            if got:
                return got
    return None


def gencode_flags(archs: Sequence[str]) -> List[str]:
    flags = []
    for a in archs:
        num = a.replace("+PTX", "")
        flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        if a.endswith("+PTX"):
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
    return flags


NVCC_FLAGS = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "--expt-relaxed-constexpr", "-lineinfo"]


def nvcc_compile_cmd(nvcc: str, src: str, obj: str, archs: Sequence[str], csrc: str = CSRC) -> List[str]:
    return [nvcc, "-c", src, "-o", obj, *NVCC_FLAGS, *gencode_flags(archs), f"-I{csrc}"]


def _pybind11_include() -> str:
    import pybind11  # build-time dependency (pyproject [build-system])
    return pybind11.get_include()


def source_hash(archs: Sequence[str], csrc: str = CSRC) -> str:
    h = hashlib.sha256()
    for f in cuda_sources(csrc) + headers(csrc) + [binding_source(csrc)]:
        h.update(os.path.basename(f).encode())
        with open(f, "rb") as fh:
            h.update(fh.read())
    h.update(";".join(archs).encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def _ninja() -> Optional[str]:
    exe = shutil.which("ninja")
    if exe:
        return exe
    try:
        import ninja  # pip package
        cand = os.path.join(ninja.BIN_DIR, "ninja")
        return cand if os.path.isfile(cand) else None
    except Exception:
        return None


def build(out_path: str, archs: Sequence[str], build_dir: str, csrc: str = CSRC, verbose: bool = False,
          jobs: Optional[int] = None) -> str:
    """Compile every csrc/*.cu and the binding, link ``out_path`` (a Python extension). Raises on failure."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    out_path, build_dir, csrc = os.path.abspath(out_path), os.path.abspath(build_dir), os.path.abspath(csrc)
    os.makedirs(build_dir, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    py_inc = sysconfig.get_paths()["include"]
    cus = cuda_sources(csrc)
    objs = [os.path.join(build_dir, os.path.basename(s) + ".o") for s in cus]
    bind_obj = os.path.join(build_dir, "cuda_bindings.o")
    bind_cmd = [cxx, "-c", binding_source(csrc), "-o", bind_obj, "-O2", "-std=c++17", "-fPIC",
                "-fvisibility=hidden", f"-I{csrc}", f"-I{_pybind11_include()}", f"-I{py_inc}"]
    link_cmd = [nvcc, "-shared", "--cudart", "static", "-Xcompiler", "-fPIC", *gencode_flags(archs),
                "-o", out_path, *objs, bind_obj]
    compiles = [nvcc_compile_cmd(nvcc, s, o, archs, csrc) for s, o in zip(cus, objs)] + [bind_cmd]
    ninja = _ninja()
    if ninja:
        _write_ninja(os.path.join(build_dir, "build.ninja"), compiles, cus + [binding_source(csrc)],
                     objs + [bind_obj], link_cmd, out_path, headers(csrc))
        cmd = [ninja, "-C", build_dir] + (["-v"] if verbose else []) + ([f"-j{jobs}"] if jobs else [])
        _run(cmd, verbose)
    else:
        with ThreadPoolExecutor(max_workers=jobs or max(1, min(len(compiles), os.cpu_count() or 1))) as pool:
            list(pool.map(lambda c: _run(c, verbose), compiles))
        _run(link_cmd, verbose)
    return out_path


def build_emulated(out_path: str, build_dir: str, csrc: str = CSRC, jobs: Optional[int] = None) -> str:
    """Test-only: compile the same csrc/ sources as C++ with -DVSR_EMULATE (csrc/vsr_emulate.h runs the kernels on
    CPU threads) into a Python extension with the ``vsr_engine._C`` API that works on CPU tensors."""
    out_path, build_dir, csrc = os.path.abspath(out_path), os.path.abspath(build_dir), os.path.abspath(csrc)
    cuda_inc = cuda_include_dir()
    if cuda_inc is None:
        raise RuntimeError("CUDA headers (cuda_fp16.h) not found: the emulation build needs a CUDA toolkit")
    os.makedirs(build_dir, exist_ok=True)
    cxx = os.environ.get("CXX", "c++")
    common = ["-std=c++20", "-O1", "-fPIC", "-pthread", "-DVSR_EMULATE", f"-I{csrc}", f"-I{cuda_inc}"]
    srcs = cuda_sources(csrc) + [binding_source(csrc)]
    objs = [os.path.join(build_dir, os.path.basename(s) + ".emu.o") for s in srcs]
    cmds = [[cxx, "-c", "-x", "c++", s, "-o", o, *common] for s in cuda_sources(csrc) for o in
            [os.path.join(build_dir, os.path.basename(s) + ".emu.o")]]
    cmds.append([cxx, "-c", binding_source(csrc), "-o", objs[-1], *common, "-fvisibility=hidden",
                 f"-I{_pybind11_include()}", f"-I{sysconfig.get_paths()['include']}"])
    with ThreadPoolExecutor(max_workers=jobs or max(1, min(len(cmds), os.cpu_count() or 1))) as pool:
        list(pool.map(lambda c: _run(c, False), cmds))
    _run([cxx, "-shared", "-pthread", "-o", out_path, *objs], False)
    return out_path


def _q(s: str) -> str:
    return s.replace("$", "$$").replace(" ", "$ ").replace(":", "$:")


def _write_ninja(path, compiles, srcs, objs, link_cmd, out, deps) -> None:
    import shlex
    lines = ["ninja_required_version = 1.3", "rule cmd", "  command = $cmd", "  description = $desc", ""]
    for cmd, src, obj in zip(compiles, srcs, objs):
        lines += [f"build {_q(obj)}: cmd {_q(src)} | {' '.join(_q(d) for d in deps)}",
                  f"  cmd = {shlex.join(cmd)}", f"  desc = compile {os.path.basename(src)}"]
    lines += [f"build {_q(out)}: cmd {' '.join(_q(o) for o in objs)}", f"  cmd = {shlex.join(link_cmd)}",
              "  desc = link", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def _run(cmd: List[str], verbose: bool) -> None:
    if verbose:
        print(" ".join(cmd), flush=True)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout[-4000:]}")
    if verbose and r.stdout:
        print(r.stdout, flush=True)
