"""The Engine's driver thread never waits for the host per frame: host synchronisations on the thread that runs
the window step (``.cpu()``, ``.item()``, ``.tolist()``, ``.numpy()``, ``bool``/``int``/``float`` of a tensor,
``torch.cuda.synchronize``, event/stream ``synchronize``) are counted per window and must stay a small constant,
not one per frame. The old driver (``.cpu()`` of every output frame on the caller's thread) fails this test."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.engine import Engine

_TENSOR_SYNCS = ("cpu", "item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__")


class SyncCounter:
    """Counts host syncs made on one thread (the driver) while installed."""

    def __init__(self, monkeypatch, thread_id: int):
        self.thread_id = thread_id
        self.calls: list = []
        for name in _TENSOR_SYNCS:
            monkeypatch.setattr(torch.Tensor, name, self._wrap(getattr(torch.Tensor, name), name))
        monkeypatch.setattr(torch.cuda, "synchronize", self._wrap(torch.cuda.synchronize, "cuda.synchronize"))
        for cls in (torch.cuda.Event, torch.cuda.Stream):
            monkeypatch.setattr(cls, "synchronize", self._wrap(cls.synchronize, f"{cls.__name__}.synchronize"))

    def _wrap(self, fn, name):
        counter = self

        def wrapped(*a, **k):
            if threading.get_ident() == counter.thread_id:
                counter.calls.append(name)
            return fn(*a, **k)
        return wrapped


def _frames(n, w=16, h=12):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("mode,device", [("split", "cpu"), ("blackbox", "cpu"), pytest.param("split", "cuda", marks=_CUDA)])
def test_driver_does_not_synchronise_per_frame(monkeypatch, mode, device):
    window, n = 8, 32
    model = load_model("basicvsr", weights=False, num_feat=8, num_block=1)
    eng = Engine(model, device=device, window=window, overlap=2, mode=mode)
    got = []
    counter = SyncCounter(monkeypatch, threading.get_ident())
    s = eng.run(_frames(n), got.append)          # the caller's thread drives the pipeline
    monkeypatch.undo()
    assert s.frames_out == n == len(got)
    windows = n // window
    per_window = len(counter.calls) / windows
    # a few per window at most (none today); one per frame would be >= window
    assert per_window <= 2, (per_window, counter.calls[:20])


def test_realbasicvsr_syncs_only_for_the_cleaning_stop_decision(monkeypatch):
    """RealBasicVSR's cleaning loop decides on the host whether to clean again: one bool() per pass, at most
    MAX_CLEANING_PASSES per window -- per window, not per frame."""
    from vsr_engine.models.realbasicvsr import MAX_CLEANING_PASSES
    window, n = 8, 24
    model = load_model("realbasicvsr", weights=False, num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=1)
    eng = Engine(model, device="cpu", window=window, overlap=2)
    counter = SyncCounter(monkeypatch, threading.get_ident())
    s = eng.run(_frames(n), lambda f: None)
    monkeypatch.undo()
    assert s.frames_out == n
    bools = counter.calls.count("__bool__")
    assert 1 <= bools / (n // window) <= MAX_CLEANING_PASSES, counter.calls[:20]
    assert len(counter.calls) - bools <= 1, counter.calls[:20]   # once per run: the input ring's numpy view


def test_driver_does_not_synchronise_per_frame_video_to_video(tmp_path, monkeypatch):
    """YUV planes in (converted to RGB by the step), yuv420p out (converted before the download), resumable
    sink (the carried state is cloned on the device per window and brought to the host on the sink thread)."""
    from test_video import make_video
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    make_video(src, n=24, w=16, h=12)
    model = load_model("basicvsr", weights=False, num_feat=8, num_block=1)
    eng = Engine(model, device="cpu", window=8, overlap=2)
    counter = SyncCounter(monkeypatch, threading.get_ident())
    s = eng.run(str(src), str(out), preset="ultrafast")
    monkeypatch.undo()
    assert s.frames_out == 24 and out.exists()
    assert len(counter.calls) / 3 <= 2, counter.calls[:20]


def test_sync_counter_counts(monkeypatch):
    """The counter itself sees a per-frame .cpu() on its thread (so the test above can fail)."""
    counter = SyncCounter(monkeypatch, threading.get_ident())
    t = torch.ones(3)
    for _ in range(5):
        t.cpu()
    t.sum().item()
    bool(t.sum() > 0)
    monkeypatch.undo()
    assert counter.calls.count("cpu") == 5 and "item" in counter.calls and "__bool__" in counter.calls
