"""Memory-aware planning and allocation back-off (vsr_engine.memory): estimates, plans under fake free-memory
figures, one clear error for impossible sizes, and injected allocation failures that must not drop or duplicate
a frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vsr_engine import load_model, memory
from vsr_engine.engine import Engine
from vsr_engine.window import BlackBox, SplitBidirectional
from vsr_engine.video import VsrError, VsrInputError

from test_video import _fast_cpu  # noqa: E402,F401 (autouse: torch reference ops, one thread)
from test_tiling import frames, maxdiff, tiny_basicvsr  # noqa: E402 (tests/ on sys.path)

INFO = memory.ModelInfo("split", 64, False, 4.0)


@pytest.fixture
def wide_tiles(monkeypatch):
    """Tiles planned with the normal pad but run with context covering the whole frame: results must be exact."""
    from vsr_engine import tiling
    init = tiling.TiledProcessor.__init__

    def wide(self, proc, h, w, grid, pad, scale):
        init(self, proc, h, w, grid, 400, scale)
    monkeypatch.setattr(tiling.TiledProcessor, "__init__", wide)
GiB = 2 ** 30


def test_parse_bytes():
    assert memory.parse_bytes("2G") == 2 * GiB and memory.parse_bytes("800MiB") == 800 * 2 ** 20
    assert memory.parse_bytes(1234) == 1234 and memory.parse_bytes("1.5g") == int(1.5 * GiB)
    with pytest.raises(VsrInputError):
        memory.parse_bytes("lots")


def test_free_memory_reads_the_host_and_honours_limits(monkeypatch):
    monkeypatch.delenv("VSR_ENGINE_MEMORY_LIMIT", raising=False)
    dev, host = memory.free_memory(torch.device("cpu"))
    avail = memory.host_available()
    assert 0 < avail < 1 << 50 and dev == host <= avail
    assert memory.free_memory(torch.device("cpu"), limit=123456) == (123456, 123456)
    monkeypatch.setenv("VSR_ENGINE_MEMORY_LIMIT", "1G")
    assert memory.free_memory(torch.device("cpu")) == (GiB, GiB)


def test_estimate_grows_with_window_size_features_and_dtype():
    e = memory.estimate
    assert e(720, 1280, 16, 8, INFO) < e(720, 1280, 32, 8, INFO) < e(1080, 1920, 32, 8, INFO)
    assert e(720, 1280, 32, 8, INFO, 2) * 2 == e(720, 1280, 32, 8, INFO, 4)
    assert e(64, 64, 8, 8, memory.ModelInfo("split", 64, True, 4.0)) > e(64, 64, 8, 8, INFO)
    # the backward features alone of window 32 + overlap 8 at 1080p, fp32, are ~21 GB: the estimate is above that
    assert e(1080, 1920, 32, 8, INFO) > 40 * 64 * 1080 * 1920 * 4


def test_plan_picks_largest_window_then_tiles_then_refuses():
    need = {w: memory.estimate(720, 1280, w, 8, INFO) + memory.host_estimate(720, 1280, w, 8, 4, False)
            for w in (32, 16, 8)}
    p = memory.plan(720, 1280, 32, 8, INFO, 4, need[32] + 1, need[32] + 1, True)
    assert (p.window, p.tiled) == (32, False)
    p = memory.plan(720, 1280, 32, 8, INFO, 4, need[32] - 1, need[32] - 1, True)
    assert (p.window, p.tiled) == (16, False)
    p = memory.plan(720, 1280, 32, 8, INFO, 4, need[8] - 1, need[8] - 1, True)
    assert p.tiled and p.window >= memory.MIN_WINDOW and p.need <= need[8]
    # never below MIN_WINDOW by itself; an explicit smaller window is honoured
    assert memory.plan(720, 1280, 4, 8, INFO, 4, need[32], need[32], True).window == 4
    with pytest.raises(VsrInputError, match=r"8192x8192 .*--window"):
        memory.plan(8192, 8192, 32, 8, INFO, 4, 20 * GiB, 20 * GiB, True)
    with pytest.raises(VsrInputError, match="1280x720"):
        memory.plan(720, 1280, 32, 8, INFO, 4, need[8] - 1, need[8] - 1, True, tile=0)


def test_engine_with_little_memory_uses_a_smaller_window_with_the_same_result(monkeypatch):
    m, fr = tiny_basicvsr(), frames(9)
    info = memory.ModelInfo("split", 8, False, 4.0)
    h, w = fr[0].shape[:2]
    lim = memory.estimate(h, w, 4, 2, info) * memory.OVERHEAD["cpu"] + memory.host_estimate(h, w, 4, 2, 4, False)
    monkeypatch.setattr(memory, "MIN_WINDOW", 2)
    eng = Engine(m, window=8, overlap=2, memory_limit=lim)
    out = list(eng.run(fr))
    assert eng.last_summary.window_used == 4 and not eng.last_summary.tiles
    assert "window 4" in eng.last_summary.line()
    assert maxdiff(out, list(Engine(m, window=4, overlap=2, tile=0).run(fr))) == 0
    assert maxdiff(out, list(Engine(m, window=8, overlap=2, tile=0).run(fr))) > 0  # the window really changed


def test_engine_with_too_little_memory_for_a_whole_frame_tiles(monkeypatch, wide_tiles):
    m, fr = tiny_basicvsr(), frames(4)
    info = memory.ModelInfo("split", 8, False, 4.0)
    lim = memory.estimate(24, 32, 2, 1, info) * memory.OVERHEAD["cpu"] * 2 // 3   # min window untiled does not fit
    monkeypatch.setattr(memory, "MIN_WINDOW", 2)
    monkeypatch.setattr(memory, "MIN_TILE", 8)
    monkeypatch.setattr(memory, "tile_pad", lambda scale: 2)
    eng = Engine(m, window=2, overlap=1, memory_limit=lim)
    out = list(eng.run(fr))
    assert eng.last_summary.tiles and "tiles" in eng.last_summary.line()
    assert maxdiff(out, list(Engine(m, window=2, overlap=1, tile=0).run(fr))) == 0


def test_impossible_size_fails_before_any_work():
    m = tiny_basicvsr()
    calls = []
    orig = SplitBidirectional.process

    def spy(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)
    SplitBidirectional.process = spy
    try:
        with pytest.raises(VsrInputError, match=r"32x24 .*--window"):
            list(Engine(m, window=4, overlap=2, memory_limit=1000).run(frames(3)))
    finally:
        SplitBidirectional.process = orig
    assert not calls


class _Failing:
    """Makes SplitBidirectional.process raise the CPU allocator's error on given calls, after k frames."""

    def __init__(self, fail_calls, after=1, cls=SplitBidirectional, msg="DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                                                 "123456789 bytes. Error code 12 (Cannot allocate memory)"):
        self.fail_calls, self.after, self.msg, self.n = set(fail_calls), after, msg, 0
        self.cls = cls
        self.orig = cls.process

    def __enter__(self):
        outer = self

        def process(proc, x, s, n_emit, left=0):
            outer.n += 1
            fail = outer.n in outer.fail_calls or "all" in outer.fail_calls
            for k, item in enumerate(outer.orig(proc, x, s, n_emit, left)):
                if fail and k == outer.after:
                    raise RuntimeError(outer.msg)
                yield item
        self.cls.process = process
        return self

    def __exit__(self, *exc):
        self.cls.process = self.orig


@pytest.mark.parametrize("fail_calls", [{1}, {1, 2}, {1, 2, 3}])
def test_allocation_failure_backs_off_and_every_frame_comes_once(fail_calls, monkeypatch):
    """Lookahead reaching the end makes the output independent of the window, so after any back-off the frames
    must be exactly those of an undisturbed run, each once, in order."""
    m, fr = tiny_basicvsr(), frames(12)
    monkeypatch.setattr(memory, "MIN_WINDOW", 1)
    ref = list(Engine(m, window=8, overlap=20, tile=0).run(fr))
    with _Failing(fail_calls, after=1):
        eng = Engine(m, window=8, overlap=20)
        got = []
        for i, f in enumerate(eng.run(fr)):
            got.append(f)
    assert len(got) == 12 and maxdiff(got, ref) == 0
    s = eng.last_summary
    assert len(s.backoffs) == len(fail_calls) and "back-off" in s.line()
    assert s.window_used == 8 >> len(fail_calls)


def test_back_off_order_is_frames_in_order_with_windows_changing(monkeypatch):
    """Window 8 -> 4 after a failure mid-window with a short lookahead: no frame dropped or duplicated."""
    monkeypatch.setattr(memory, "MIN_WINDOW", 1)
    m = Engine(load_model("basicvsr", weights=False, num_feat=4, num_block=1), window=8, overlap=1)
    fr = frames(20, 12, 14)
    seen = []
    with _Failing({2}, after=3):
        for f in m.run(fr):
            seen.append(f)
    assert len(seen) == 20
    assert m.last_summary.backoffs == ["frame 8: window 8 -> window 4"]
    assert m.last_summary.window_used == 4


class Nearest2(torch.nn.Module):
    """Black box whose output shows which input frame it came from."""
    scale = 2

    def forward(self, x):
        return x.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)


@pytest.mark.parametrize("fail_calls,after", [({2}, 3), ({2, 3}, 0), ({1, 4, 6}, 1)])
def test_back_off_mid_stream_delivers_each_frame_once_in_order(fail_calls, after, monkeypatch):
    monkeypatch.setattr(memory, "MIN_WINDOW", 1)
    fr = frames(23, 10, 12)
    with _Failing(fail_calls, after=after, cls=BlackBox):
        eng = Engine(Nearest2(), window=8, overlap=2)
        out = list(eng.run(fr))
    assert len(out) == 23
    for i, (o, f) in enumerate(zip(out, fr)):
        assert np.array_equal(o, f.repeat(2, 0).repeat(2, 1)), i
    assert len(eng.last_summary.backoffs) == len(fail_calls)


def test_back_off_reaches_tiles_and_keeps_the_result(monkeypatch, wide_tiles):
    m, fr = tiny_basicvsr(), frames(4)
    monkeypatch.setattr(memory, "MIN_WINDOW", 2)
    monkeypatch.setattr(memory, "MIN_TILE", 8)
    ref = list(Engine(m, window=2, overlap=20, tile=0).run(fr))
    with _Failing({1, 2}, after=0):
        eng = Engine(m, window=2, overlap=20)
        out = list(eng.run(fr))
    assert eng.last_summary.tiles and len(eng.last_summary.backoffs) == 2
    assert maxdiff(out, ref) == 0


def test_back_off_gives_up_with_one_clear_error(monkeypatch):
    m, fr = tiny_basicvsr(), frames(4, 12, 14)
    monkeypatch.setattr(memory, "MIN_WINDOW", 1)
    with _Failing({"all"}, after=0):
        with pytest.raises(VsrError, match="out of memory at frame 0 even with"):
            list(Engine(m, window=2, overlap=1).run(fr))


def test_other_errors_are_not_retried():
    m, fr = tiny_basicvsr(), frames(4, 12, 14)
    with _Failing({1}, after=0, msg="some other failure"):
        with pytest.raises(RuntimeError, match="some other failure"):
            list(Engine(m, window=2, overlap=1).run(fr))


def test_is_alloc_failure():
    assert memory.is_alloc_failure(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert memory.is_alloc_failure(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert memory.is_alloc_failure(MemoryError())
    assert not memory.is_alloc_failure(RuntimeError("shape mismatch"))
    assert not memory.is_alloc_failure(ValueError("out of memory"))
