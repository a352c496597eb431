"""The automatic backend order on CUDA tensors comes from one table (vsr_engine/ops/backend_choice.json); the
cupy backend reports why it is not live; benchmark rows turn into a new table."""
import json

import pytest
import torch

from vsr_engine.ops import (BACKENDS, BackendUnavailable, _backend, _choice, backend_info, format_backend_info,
                            use_backend)


def test_table_drives_the_cuda_order(tmp_path, monkeypatch):
    t = _choice.table()
    assert set(t["ops"]) == set(_backend.OPS) and t["basis"]
    for op in _backend.OPS:
        order = _backend.auto_order(op, "cuda")
        assert order[-1] == "torch" and set(order) <= set(BACKENDS)
        assert [b for b in order if b != "torch"] == [b for b in t["ops"][op]["order"] if b != "torch"]
    # the static analysis keeps the CUDA dwpw / meta kernels (no tensor cores) out of the automatic choice
    assert "cuda" not in _backend.auto_order("dwpw_conv2d", "cuda")
    assert "cuda" not in _backend.auto_order("meta_upscale", "cuda")
    p = tmp_path / "t.json"
    p.write_text(json.dumps({"basis": "test", "measured_on": "X", "ops": {"flow_warp": {"order": ["cupy"]}}}))
    monkeypatch.setenv("VSR_ENGINE_CHOICE", str(p))
    assert _backend.auto_order("flow_warp", "cuda") == ("cupy", "torch")
    assert _choice.basis() == "test (measured on X)"


def test_rows_make_a_table():
    rows = [{"op": "flow_warp", "backend": "triton", "ms": 2.0}, {"op": "flow_warp", "backend": "cuda", "ms": 1.0},
            {"op": "flow_warp", "backend": "cuda", "ms": 0.5}, {"op": "flow_warp", "backend": "cupy", "ms": None}]
    t = _choice.from_rows(rows, "H200")
    assert t["ops"]["flow_warp"]["order"] == ["cuda", "triton", "torch"] and t["measured_on"] == "H200"
    assert t["ops"]["clean_step"] == _choice.table()["ops"]["clean_step"]  # unmeasured ops keep their entry


def test_cupy_reports_and_refuses_cleanly():
    info = backend_info()
    for op in _backend.OPS:
        assert "cupy" in info[op] and isinstance(info[op]["cupy"]["why"], str) and info[op]["cupy"]["why"]
    text = format_backend_info(info)
    assert "automatic order on CUDA tensors" in text
    if not torch.cuda.is_available():
        assert info["flow_warp"]["cupy"]["live"] is False
        with use_backend("cupy"), pytest.raises(BackendUnavailable, match="cupy"):
            _backend.resolve("flow_warp", "cpu")
