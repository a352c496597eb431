"""Backend choice: automatic per device, forcing (function, context manager, environment), soft failure, and
``backend_info()`` for ``vsr-engine info``."""
import os
import subprocess
import sys

import pytest
import torch

from op_testing import INTERPRET
from vsr_engine import ops
from vsr_engine.ops import BackendUnavailable, backend_info, format_backend_info, get_backend, set_backend, use_backend
from vsr_engine.ops._backend import IMPLEMENTS, OPS, resolve

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(autouse=True)
def _reset():
    yield
    set_backend(None)


def test_automatic_choice_on_cpu():
    want = "triton" if INTERPRET else "torch"
    assert all(resolve(op, "cpu") == want for op in OPS)


def test_forcing():
    set_backend("torch")
    assert get_backend() == "torch" and resolve("flow_warp", "cpu") == "torch"
    set_backend(None)
    with use_backend("torch", op="meta_upscale"):
        assert resolve("meta_upscale", "cpu") == "torch"
        assert get_backend("meta_upscale") == "torch" and get_backend("flow_warp") is None
        with use_backend(None, op="meta_upscale"):
            assert get_backend("meta_upscale") is None
        assert get_backend("meta_upscale") == "torch"
    assert get_backend("meta_upscale") is None
    with pytest.raises(ValueError, match="unknown backend"):
        set_backend("cudnn")
    with pytest.raises(ValueError, match="unknown op"):
        set_backend("torch", op="conv")


def test_forced_backend_that_cannot_run_raises_with_the_reason():
    x, flow = torch.randn(1, 2, 4, 5), torch.zeros(1, 4, 5, 2)
    with use_backend("cuda"):
        with pytest.raises(BackendUnavailable, match="CUDA tensors"):
            ops.flow_warp(x, flow)
    if not INTERPRET:
        with use_backend("triton"), pytest.raises(BackendUnavailable, match="TRITON_INTERPRET"):
            ops.flow_warp(x, flow)


def test_backend_info_lists_every_op():
    info = backend_info()
    for op in OPS:
        row = info[op]
        assert row["torch"]["live"] is True
        assert row["triton"]["live"] == (INTERPRET or torch.cuda.is_available())
        if not torch.cuda.is_available():
            assert row["cuda"]["live"] is False
            assert ("no CUDA device" if "cuda" in IMPLEMENTS[op] else "not implemented") in row["cuda"]["why"]
        assert row["auto_cpu"] == ("triton" if INTERPRET else "torch")
    text = format_backend_info(info)
    assert all(op in text for op in OPS) and "not live" in text


def _run(code, **env):
    e = dict(os.environ, PYTHONPATH=ROOT, **env)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.strip().splitlines()[-1]


def test_environment_variable_and_import_without_triton():
    out = _run("from vsr_engine.ops import get_backend; print(get_backend(), get_backend('clean_step'))",
               VSR_ENGINE_BACKEND="triton,clean_step=torch")
    assert out == "triton torch"
    # a machine without triton: importing works, the ops run on torch, backend_info says why
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, vsr_engine\n"
            "from vsr_engine import ops\n"
            "x = torch.randn(1, 2, 4, 5); y = ops.flow_warp(x, torch.zeros(1, 4, 5, 2))\n"
            "assert torch.allclose(y, x)\n"
            "print(ops.backend_info()['flow_warp']['triton']['why'])")
    assert "triton not importable" in _run(code, TRITON_INTERPRET="1")
