"""Host threads beside the compute (vsr_engine/host_threads.py): sizing against the compute threads, and no second
OpenMP team on the engine's host threads."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from vsr_engine import host_threads as H
from vsr_engine import load_model
from vsr_engine.engine import Engine

from test_video import make_video  # noqa: E402 (tests/ on sys.path)


def test_plan_sizes_host_threads_against_the_compute():
    cpu = torch.device("cpu")
    full = H.plan(cpu, compute_threads=2, ncores=2)
    assert (full.decoder, full.encoder, full.copy) == (1, 1, 1)
    assert "compute uses 2 threads on 2 cores" in full.describe()
    part = H.plan(cpu, compute_threads=2, ncores=8)
    assert (part.decoder, part.encoder, part.copy) == (4, 6, 1)
    assert H.plan(cpu, compute_threads=16, ncores=4)[:3] == (1, 1, 1)
    gpu = H.plan(torch.device("cuda"), compute_threads=2, ncores=2)
    assert gpu[:3] == (0, 0, 0) and "decode auto" in gpu.describe()


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _in_thread(fn):
    out = {}

    def run():
        out["v"] = fn()
    t = threading.Thread(target=run)
    t.start()
    t.join()
    return out["v"]


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc (Linux)")
@pytest.mark.skipif(not torch.backends.openmp.is_available(), reason="torch without OpenMP")
def test_pinned_host_thread_opens_no_second_openmp_team():
    x = torch.randn(2000, 2000)

    def op(pin):
        def f():
            ok = H.pin_host_thread() if pin else None
            n0 = _os_threads()
            for _ in range(3):
                (x * 2).sum()  # a parallel loop
            return ok, torch.get_num_threads(), _os_threads() - n0
        return f

    nmain = torch.get_num_threads()
    (x * 2).sum()  # the compute thread's own team exists
    ok, inner, grown = _in_thread(op(True))
    assert ok and inner == 1 and grown == 0
    assert torch.get_num_threads() == nmain  # the compute thread keeps its count
    if nmain > 1:  # the failure it prevents: an unpinned helper thread's parallel loops get a team of nmain
        _, inner, _ = _in_thread(op(False))  # (its worker threads may be reused ones, so no thread count here)
        assert inner == nmain


def test_engine_host_threads_are_pinned_and_sized(tmp_path):
    """On a CPU run the sink thread (where frames are written) has one OpenMP thread, the compute keeps torch's
    count, and the run summary states the host thread plan."""
    src = make_video(str(tmp_path / "in.mp4"), n=5, w=16, h=12)
    m = load_model("basicvsr", weights=False, num_feat=8, num_block=1)
    seen = []

    def sink(frame, *a):
        seen.append((threading.current_thread().name, torch.get_num_threads()))

    eng = Engine(m, device="cpu", dtype="float32", window=3)
    summary = eng.run(src, sink)
    assert summary.frames_out == 5 and seen
    assert all(n == 1 for _, n in seen), seen
    plan = H.plan(torch.device("cpu"))
    assert plan.describe() in summary.plan
    # and a video sink gets the planned encoder threads
    out = str(tmp_path / "out.mp4")
    s2 = eng.run(src, out)
    assert s2.frames_out == 5 and os.path.exists(out)
