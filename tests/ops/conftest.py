"""tests/ops fixtures: the host-emulated build of csrc/*.cu (``cuda_emu``), compiled once per source hash."""
import os
import sys
import sysconfig

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # op_testing

from vsr_engine.ops import _build, _cuda  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session", autouse=True)
def no_tf32():
    """fp32 references (F.conv2d, matmul) in full fp32 on a GPU: cuDNN's default TF32 would make the fp32 kernel
    comparisons fail for the wrong reason."""
    import torch
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


@pytest.fixture(scope="session", autouse=True)
def strict_dot_in_interpreter():
    """Under TRITON_INTERPRET=1, tl.dot checks triton 3.6's block-shape rule (K >= 16; the interpreter itself checks
    nothing): a launcher that picks a tile only a newer triton compiles fails here, not first on a GPU."""
    from vsr_engine.ops import _backend, _util
    if not (_backend.INTERPRET and _backend.TRITON_OK):
        yield
        return
    from triton.runtime import interpreter
    fns = interpreter.interpreter_builder.codegen_fns
    old = fns["min_dot_size"]
    fns["min_dot_size"] = _util.strict_min_dot_size()
    yield
    fns["min_dot_size"] = old


@pytest.fixture(scope="session")
def cuda_emu_module():
    """csrc/ compiled with -DVSR_EMULATE into an extension with vsr_engine._C's API that runs on CPU tensors.
    Cached in build/emu-<hash>/ (git-ignored). Skips when no C++20 compiler or CUDA headers are found."""
    import importlib.util
    if _build.cuda_include_dir() is None:
        pytest.skip("CUDA headers not found (the emulation build needs cuda_fp16.h)")
    try:
        import pybind11  # noqa: F401
    except ImportError:
        pytest.skip("pybind11 not installed")
    tag = _build.source_hash(["emulate"])
    out_dir = os.path.join(ROOT, "build", f"emu-{tag}")
    out = os.path.join(out_dir, "_C" + sysconfig.get_config_var("EXT_SUFFIX"))
    if not os.path.isfile(out):
        tmp = out + f".tmp{os.getpid()}"
        try:
            _build.build_emulated(tmp, os.path.join(out_dir, "obj"))
        except RuntimeError as e:
            pytest.fail(f"emulation build of csrc/ failed:\n{e}")
        os.replace(tmp, out)
    spec = importlib.util.spec_from_file_location("_C", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def cuda_emu(cuda_emu_module):
    """Routes the CUDA backend to the emulated kernels for one test."""
    _cuda.use_emulated(cuda_emu_module)
    yield cuda_emu_module
    _cuda.use_emulated(None)
