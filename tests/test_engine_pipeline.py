"""The Engine on the streaming pipeline: stage times and the bound stage in the summary, low-precision window
steps (fp16/bf16 with SPyNet and flows in fp32), encoder controls (threads, lossless), YUV staging."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.engine import Engine, resolve_dtype
from vsr_engine.io.stage import StagedVideoReader, open_staged_source

from test_video import make_video, probe  # noqa: E402 (tests/ on sys.path)


def tiny():
    torch.manual_seed(0)
    return load_model("basicvsr", weights=False, num_feat=8, num_block=1)


def frames(n, w=16, h=12):
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def test_summary_names_the_bound_stage(tmp_path):
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, n=10, w=16, h=12)
    s = Engine(tiny(), window=4, overlap=2).run(str(src), str(out), preset="ultrafast")
    assert set(s.stages) == {"decode", "stage", "upload", "model", "download", "encode"}
    assert s.stages["model"] > 0 and s.stages["encode"] > 0
    assert s.bound_by == max(s.stages, key=s.stages.get)
    assert f"bound by {s.bound_by}" in s.line()


def test_video_frames_are_staged_as_yuv(tmp_path):
    """A yuv420p video is read without host RGB conversion: its planes go to the device as they are."""
    src = tmp_path / "in.mp4"
    make_video(src, n=3, w=16, h=12)
    r = open_staged_source(str(src))
    try:
        assert isinstance(r, StagedVideoReader)
        f, fi = next(iter(r))
        assert f.format.name == "yuv420p" and fi.index == 0
    finally:
        r.close()


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_low_precision_window_step(dtype):
    """fp16/bf16 run end to end on CPU, on the module path (SPyNet stays fp32: flows and warp coordinates in fp32)
    and on the fast step (bf16 on a CPU takes it by default; SPyNet in the 16-bit dtype there, measured as faithful:
    bench/results/fast_fidelity_cpu.json); outputs are close to fp32 (a random tiny model, so only a loose bound:
    the real-weights figures are bench/bench_fidelity.py's and bench/eval_fast_fidelity.py's)."""
    fr = frames(6)
    ref = list(Engine(tiny(), window=3, overlap=2).run(fr))
    plain = Engine(tiny(), window=3, overlap=2, dtype=dtype, fast=False)
    assert next(plain.model.spynet.parameters()).dtype == torch.float32
    assert next(plain.model.forward_trunk.parameters()).dtype == resolve_dtype(dtype)
    engines = [plain]
    if dtype == "bf16":
        fast = Engine(tiny(), window=3, overlap=2, dtype=dtype)
        assert fast.fast is not None and fast.fast.flow_dtype == torch.bfloat16
        engines.append(fast)
    for eng in engines:
        out = list(eng.run(fr))
        assert len(out) == 6 and all(o.dtype == np.uint8 and o.shape == (48, 64, 3) for o in out)
        diff = max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(out, ref))
        assert diff <= 24, diff


def test_default_dtype_by_device():
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.float16
    assert resolve_dtype("bf16") == torch.bfloat16


def test_encoder_threads_and_lossless(tmp_path):
    from vsr_engine import cli
    p = argparse.ArgumentParser()
    cli._add_upscale(p.add_subparsers(), argparse.ArgumentParser(add_help=False))
    a = p.parse_args(["upscale", "in.mp4", "out.mp4", "--lossless", "--encoder-threads", "2"])
    kw = cli._encoding(a)
    assert kw["crf"] is None and kw["options"] == {"qp": "0"} and kw["preset"] == "ultrafast"
    assert kw["encoder_threads"] == 2
    a = p.parse_args(["upscale", "in.mp4", "out.mp4"])
    assert cli._encoding(a)["preset"] == "medium" and cli._encoding(a)["encoder_threads"] is None
    src = tmp_path / "in.mp4"
    make_video(src, n=6, w=16, h=12)
    sizes = {}
    for name, extra in (("lossy", {"crf": 40}), ("lossless", {"crf": None, "options": {"qp": "0"}})):
        out = tmp_path / f"{name}.mp4"
        s = Engine(tiny(), window=4, overlap=2).run(str(src), str(out), preset="ultrafast", encoder_threads=1,
                                                    **extra)
        assert s.frames_out == 6 and probe(out)["n"] == 6
        sizes[name] = out.stat().st_size
    assert sizes["lossless"] > sizes["lossy"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_matches_cpu(tmp_path):
    """CUDA path (pinned rings, copy streams, device YUV): fp32 output equals the CPU's within rounding, and fp16
    (the CUDA default) stays close."""
    src = tmp_path / "in.mp4"
    make_video(src, n=10, w=32, h=24)
    ref = list(Engine(tiny(), device="cpu", window=4, overlap=2).run(str(src)))
    got = list(Engine(tiny(), device="cuda", dtype="fp32", window=4, overlap=2).run(str(src)))
    half = list(Engine(tiny(), device="cuda", window=4, overlap=2).run(str(src)))
    assert len(got) == len(half) == len(ref) == 10
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(got, ref)) <= 2
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(half, ref)) <= 24
