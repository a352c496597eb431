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
        for train in (False, True):
            order = _backend.auto_order(op, "cuda", -1, train)
            assert "torch" in order and set(order) <= set(BACKENDS)
            # the table's order exactly, torch in its measured place (appended only when the table omits it)
            want = _choice.order(op, -1, train)
            assert list(order) == (want if "torch" in want else want + ["torch"])
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


def test_rows_with_sizes_make_size_buckets(tmp_path, monkeypatch):
    # small inputs: triton is faster; large inputs: cuda is faster -> a bucket below the large size
    rows = [{"op": "flow_warp", "backend": "triton", "ms": 0.01, "numel": 1000},
            {"op": "flow_warp", "backend": "cuda", "ms": 0.02, "numel": 1000},
            {"op": "flow_warp", "backend": "triton", "ms": 2.0, "numel": 10 ** 6},
            {"op": "flow_warp", "backend": "cuda", "ms": 1.0, "numel": 10 ** 6},
            {"op": "clean_step", "backend": "cuda", "ms": 0.1, "numel": 1000},
            {"op": "clean_step", "backend": "cuda", "ms": 1.0, "numel": 10 ** 6}]
    t = _choice.from_rows(rows, "H200")
    fw = t["ops"]["flow_warp"]
    assert fw["order"] == ["cuda", "triton", "torch"]
    assert fw["by_size"] == [{"max_numel": 31622, "order": ["triton", "cuda", "torch"], "why": fw["by_size"][0]["why"]}]
    assert "by_size" not in t["ops"]["clean_step"]          # same order at every size: no bucket
    p = tmp_path / "t.json"
    _choice.write(t, str(p))
    monkeypatch.setenv("VSR_ENGINE_CHOICE", str(p))
    assert _choice.bucket("flow_warp", 1000) == 0 and _choice.bucket("flow_warp", 31622) == 0
    assert _choice.bucket("flow_warp", 31623) == -1 and _choice.bucket("clean_step", 10) == -1
    assert _backend.auto_order("flow_warp", "cuda", 0)[:2] == ("triton", "cuda")
    assert _backend.auto_order("flow_warp", "cuda", -1)[:2] == ("cuda", "triton")
    # the static table has no buckets: every size takes the op's order, and nothing is compared
    monkeypatch.delenv("VSR_ENGINE_CHOICE")
    assert all(_choice.bucket(op, 10 ** 9) == -1 for op in _backend.OPS)


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


def test_a_kernel_slower_than_eager_is_never_picked(tmp_path, monkeypatch):
    """Rows where eager (torch) beats a kernel put torch first, and the automatic choice then runs torch."""
    rows = [{"op": "clean_step", "backend": "torch", "ms": 1.0, "pass": "fwd"},
            {"op": "clean_step", "backend": "triton", "ms": 2.0, "pass": "fwd"},
            {"op": "clean_step", "backend": "torch", "ms": 5.0, "pass": "fwd+bwd"},
            {"op": "clean_step", "backend": "triton", "ms": 3.0, "pass": "fwd+bwd"}]
    t = _choice.from_rows(rows, "H200")
    assert t["ops"]["clean_step"]["order"] == ["torch", "triton"]            # inference: forward rows
    assert t["ops"]["clean_step"]["train"]["order"] == ["triton", "torch"]   # training: forward+backward rows
    p = tmp_path / "t.json"
    p.write_text(json.dumps(t))
    monkeypatch.setenv("VSR_ENGINE_CHOICE", str(p))
    monkeypatch.setitem(_backend._USABLE, "triton", lambda dev: (True, "test"))
    assert _backend.resolve("clean_step", "cuda", -1, False) == "torch"
    assert _backend.resolve("clean_step", "cuda", -1, True) == "triton"
    assert _backend.auto_order("clean_step", "cuda", -1, False) == ("torch", "triton")
