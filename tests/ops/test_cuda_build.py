"""Build checks for csrc/: every kernel file compiles with ``nvcc -c`` (skipped without nvcc), the C API, the
pybind11 binding and the Python callers agree, and the host-emulated build loads. The numerical tests of the
CUDA kernels (emulated on the CPU) are the ``cuda_emu`` cases in each tests/ops/test_<op>.py."""
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from vsr_engine.ops import _build

OPS = ("flow_warp", "dwpw_conv2d", "pixel_shuffle", "meta_upscale", "clean_step", "dyn_upsample", "deform_conv2d")
NVCC = _build.find_nvcc()
ARCH = os.environ.get("VSR_TEST_NVCC_ARCH", "90")  # one architecture keeps the check short


def read(path):
    with open(path) as f:
        return f.read()


def test_one_cu_file_per_op():
    names = {os.path.basename(p)[:-3] for p in _build.cuda_sources()}
    assert set(OPS) <= names, f"missing csrc/<op>.cu for {set(OPS) - names}"


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
def test_nvcc_compiles_every_kernel(tmp_path):
    srcs = _build.cuda_sources()

    def compile_one(src):
        obj = tmp_path / (os.path.basename(src) + ".o")
        cmd = _build.nvcc_compile_cmd(NVCC, src, str(obj), [ARCH]) + ["-Xcompiler", "-Wall"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return src, r.returncode, r.stdout, obj

    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        results = list(pool.map(compile_one, srcs))
    failed = [f"{os.path.basename(s)}:\n{out[-3000:]}" for s, rc, out, _ in results if rc != 0]
    assert not failed, "nvcc failed:\n" + "\n".join(failed)
    assert all(obj.stat().st_size > 0 for *_, obj in results)


def test_c_api_binding_and_callers_agree():
    header = read(os.path.join(_build.CSRC, "vsr_kernels.h"))
    declared = set(re.findall(r"\bint (vsr_\w+)\(", header)) | set(re.findall(r"char\* (vsr_\w+)\(", header))
    defined = set()
    for src in _build.cuda_sources():
        defined |= set(re.findall(r'extern "C" (?:int|const char\*) (vsr_\w+)\(', read(src)))
    assert declared == defined, (declared ^ defined)
    binding = read(_build.binding_source())
    bound = set(re.findall(r'm\.def\("(\w+)"', binding))
    for name in declared - {"vsr_error_string", "vsr_probe"}:
        assert name + "(" in binding and name[4:] in bound, f"{name} is not bound"
    # every name the Python side calls exists in the binding
    ops_dir = os.path.join(os.path.dirname(_build.__file__))
    called = set()
    for op in OPS:
        called |= set(re.findall(r'_cuda\.call\("(\w+)"', read(os.path.join(ops_dir, op + ".py"))))
    assert called and called <= bound, called - bound


def test_emulated_extension_loads(cuda_emu_module):
    assert cuda_emu_module.probe(0) == ""
    for name in ("flow_warp_fwd", "dwpw_fwd", "pixel_shuffle_fwd", "meta_upscale_fwd", "clean_step_fwd",
                 "deform_conv2d_fwd", "deform_conv2d_bwd"):
        assert hasattr(cuda_emu_module, name)
