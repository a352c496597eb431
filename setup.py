"""Build script. Pure-Python install always works; compiled parts are optional and never fail the install.

- ``vsr_engine._C`` -- the CUDA kernels of csrc/*.cu behind a pybind11 binding (csrc/cuda_bindings.cpp), compiled
  with nvcc (ninja when available) by ``vsr_engine/ops/_build.py``. No torch header is used, so only nvcc and
  pybind11 are needed; by default it is built when a CUDA-enabled torch is installed (``--no-build-isolation``)
  and nvcc is found. ``VSR_ENGINE_BUILD_CUDA=1`` builds it anyway (e.g. a CPU box preparing a wheel),
  ``=0`` never. Architectures: ``VSR_CUDA_ARCHS`` / ``TORCH_CUDA_ARCH_LIST`` (e.g. "80;90"), else the GPUs
  present, else sm_80/86/89/90 + PTX. Without it the ops fall back to Triton / torch at run time, and
  ``vsr_engine.ops._cuda`` can JIT-build the same sources on a GPU machine.
- ``vsr_engine._host_ext`` -- the C++ host pipeline extension (csrc/host_*.cpp, pybind11; used by
  ``vsr_engine._host``), built when those sources exist and a C++ compiler works.
Any failure is reported as a warning and the install continues.
"""
import glob
import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _load_build_helper():
    """vsr_engine/ops/_build.py, loaded by path: importing vsr_engine would need torch at build time."""
    spec = importlib.util.spec_from_file_location("_vsr_build", os.path.join(HERE, "vsr_engine", "ops", "_build.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _note(msg):
    print(f"vsr_engine setup: {msg}", file=sys.stderr, flush=True)


def _cuda_decision(helper):
    mode = os.environ.get("VSR_ENGINE_BUILD_CUDA", "auto").strip().lower()
    if mode in ("0", "no", "false", "off"):
        return False, "VSR_ENGINE_BUILD_CUDA=0"
    if helper.find_nvcc() is None:
        return False, "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    if importlib.util.find_spec("pybind11") is None:
        return False, "pybind11 not installed"
    if mode in ("1", "yes", "true", "on"):
        return True, "VSR_ENGINE_BUILD_CUDA=1"
    try:
        import torch
        if torch.version.cuda is None:
            return False, (f"torch {torch.__version__} is not a CUDA build "
                           "(VSR_ENGINE_BUILD_CUDA=1 builds the kernels anyway)")
        return True, f"torch {torch.__version__} (CUDA {torch.version.cuda}) and nvcc found"
    except Exception as e:
        return False, (f"torch not importable at build time ({type(e).__name__}); use --no-build-isolation "
                       "or VSR_ENGINE_BUILD_CUDA=1")


def _archs(helper):
    archs = helper.archs_from_env()
    if archs:
        return archs
    try:
        import torch
        if torch.cuda.is_available():
            caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
            return [f"{a}{b}" for a, b in caps]
    except Exception:
        pass
    return list(helper.DEFAULT_ARCHS)


class OptionalBuildExt(build_ext):
    """Builds each optional extension; a failure skips that extension with a warning."""

    def build_extension(self, ext):
        try:
            if ext.name == "vsr_engine._C":
                helper = _load_build_helper()
                ok, why = _cuda_decision(helper)
                if not ok:
                    _note(f"skipping the CUDA kernels (vsr_engine._C): {why}")
                    return
                archs = _archs(helper)
                _note(f"building the CUDA kernels (vsr_engine._C) for {archs}: {why}")
                out = self.get_ext_fullpath(ext.name)
                os.makedirs(os.path.dirname(out), exist_ok=True)
                helper.build(out, archs, os.path.join(self.build_temp, "vsr_C"), verbose=bool(self.verbose > 1))
            else:
                super().build_extension(ext)
        except Exception as e:
            _note(f"skipping {ext.name}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")


def _extensions():
    # optional=True: setuptools copies / packages them only when they were built
    exts = [Extension("vsr_engine._C", sources=sorted(glob.glob("csrc/*.cu")) + ["csrc/cuda_bindings.cpp"],
                      optional=True)]
    host = sorted(glob.glob("csrc/host_*.cpp"))
    if host and importlib.util.find_spec("pybind11") is not None:
        import pybind11
        exts.append(Extension("vsr_engine._host_ext", sources=host, include_dirs=[pybind11.get_include(), "csrc"],
                              language="c++", extra_compile_args=["-O3", "-std=c++17", "-fvisibility=hidden", "-pthread"],
                              extra_link_args=["-pthread"], optional=True))
    return exts


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
