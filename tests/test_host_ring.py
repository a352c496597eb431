"""Host staging ring and plane copies: the C++ extension and the Python fallback run the same cases."""
from __future__ import annotations

import _thread
import os
import shutil
import threading
import time

import numpy as np
import pytest

from vsr_engine import _host
from vsr_engine._host import HostExtensionError, RingCancelled, RingClosed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOIN = 20.0  # generous join timeouts: a hang fails the test instead of the session


def _cpp_backend():
    bdir = os.environ.get("VSR_ENGINE_TEST_BUILD_DIR") or os.path.join(REPO, "build", "test_host_ext")
    try:
        return _host.load_cpp(build_dir=bdir)
    except HostExtensionError as e:
        if shutil.which("c++") is None and shutil.which("g++") is None:
            pytest.skip(f"no C++ compiler: {e}")
        raise


@pytest.fixture(scope="module", params=["cpp", "python"])
def hb(request):
    return _cpp_backend() if request.param == "cpp" else _host.python_backend()


def _spawn(fn, *args):
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


# ---------------------------------------------------------------------------------------------------------------
# ring semantics
# ---------------------------------------------------------------------------------------------------------------
def test_backend_names(hb):
    assert hb.name in ("cpp", "python")
    assert hb.ABI_VERSION == _host.ABI_VERSION


def test_single_thread_cycle(hb):
    r = hb.Ring(3)
    assert r.num_slots == 3 and r.states() == ["free"] * 3
    s0, q0 = r.acquire_free(0)
    s1, q1 = r.acquire_free(0)
    assert (q0, q1) == (0, 1) and s0 != s1
    assert sorted(r.states()) == ["free", "writing", "writing"]
    r.commit(s1, {"i": 1})  # committed out of order ...
    with pytest.raises(TimeoutError):
        r.acquire_ready(0)  # ... seq 0 is not ready yet: ordering holds
    r.commit(s0, {"i": 0})
    assert r.acquire_ready(0) == (s0, 0, {"i": 0})
    assert r.acquire_ready(0) == (s1, 1, {"i": 1})
    r.release(s1)
    r.release(s0)
    st = r.stats()
    assert st["free"] == 3 and st["committed"] == 2 and st["consumed"] == 2


def test_discard_skips_sequence(hb):
    r = hb.Ring(3)
    a, _ = r.acquire_free(0)
    b, _ = r.acquire_free(0)
    c, _ = r.acquire_free(0)
    r.commit(c, "c")
    r.discard(b)
    r.commit(a, "a")
    assert r.acquire_ready(0)[1:] == (0, "a")
    assert r.acquire_ready(0)[1:] == (2, "c")
    assert r.stats()["discarded"] == 1


def test_misuse_raises(hb):
    r = hb.Ring(2)
    with pytest.raises(ValueError):
        hb.Ring(0)
    with pytest.raises(IndexError):
        r.commit(5, None)
    with pytest.raises(ValueError):
        r.commit(0, None)  # free, not writing
    s, _ = r.acquire_free(0)
    with pytest.raises(ValueError):
        r.release(s)  # writing, not reading
    with pytest.raises(TypeError):
        r.fail("not an exception")


@pytest.mark.parametrize("slots", [1, 3])
def test_ordering_and_bound_with_threads(hb, slots):
    r = hb.Ring(slots)
    n = 400
    bufs = np.zeros((slots, 8), np.int64)
    acquired = [0]
    released = [0]
    max_in_flight = [0]
    lock = threading.Lock()

    def producer():
        for i in range(n):
            slot, seq = r.acquire_free(None)
            with lock:
                acquired[0] += 1
                max_in_flight[0] = max(max_in_flight[0], acquired[0] - released[0])
            assert seq == i
            bufs[slot, :] = i
            r.commit(slot, i)
        r.close()

    got = []

    def consumer():
        while True:
            try:
                slot, seq, meta = r.acquire_ready(None)
            except RingClosed:
                return
            assert (bufs[slot] == meta).all()
            got.append((seq, meta))
            with lock:
                released[0] += 1
            r.release(slot)

    tp, op = _spawn(producer)
    tc, oc = _spawn(consumer)
    tp.join(JOIN)
    tc.join(JOIN)
    assert not tp.is_alive() and not tc.is_alive()
    assert "error" not in op and "error" not in oc, (op, oc)
    assert got == [(i, i) for i in range(n)]
    assert 1 <= max_in_flight[0] <= slots  # the producer never runs more than `slots` frames ahead


def test_two_producers_consumer_sees_seq_order(hb):
    r = hb.Ring(4)
    n = 200
    gate = threading.Lock()
    delays = np.random.RandomState(0).randint(0, 3, size=n)

    def producer():
        while True:
            with gate:
                try:
                    slot, seq = r.acquire_free(None)
                except RingClosed:
                    return
                if seq >= n:
                    r.discard(slot)
                    r.close()
                    return
            if delays[seq] == 0:
                time.sleep(0)  # shuffle commit order between the two producers
            r.commit(slot, seq)

    threads = [_spawn(producer) for _ in range(2)]
    seqs = []
    while True:
        try:
            slot, seq, meta = r.acquire_ready(JOIN)
        except RingClosed:
            break
        assert seq == meta
        seqs.append(seq)
        r.release(slot)
    for t, o in threads:
        t.join(JOIN)
        assert "error" not in o, o
    assert seqs == list(range(n))


def test_producer_blocks_when_full_then_resumes(hb):
    r = hb.Ring(2)
    s0, _ = r.acquire_free(0)
    r.acquire_free(0)
    with pytest.raises(TimeoutError):
        r.acquire_free(0.05)
    t, out = _spawn(r.acquire_free, None)
    t.join(0.2)
    assert t.is_alive() and not out  # still blocked: the ring is full
    r.discard(s0)  # frees a slot -> the blocked producer gets it, with the next sequence number
    t.join(JOIN)
    assert not t.is_alive() and out["value"] == (s0, 2)


def test_timeouts(hb):
    r = hb.Ring(1)
    with pytest.raises(TimeoutError):
        r.acquire_ready(0)
    with pytest.raises(TimeoutError):
        r.acquire_ready(0.02)
    s, _ = r.acquire_free(0.0)
    with pytest.raises(TimeoutError):
        r.acquire_free(0)
    r.commit(s, 1)
    assert r.acquire_ready(-1)[2] == 1  # negative timeout == poll


def test_close_wakes_consumer_after_draining(hb):
    r = hb.Ring(3)
    s, _ = r.acquire_free(0)
    r.commit(s, "x")
    w, _ = r.acquire_free(0)  # still being written when close() comes
    r.close()
    with pytest.raises(RingClosed):
        r.acquire_free(0)  # no new writes
    assert r.acquire_ready(0)[2] == "x"
    t, out = _spawn(r.acquire_ready, None)
    t.join(0.1)
    assert t.is_alive()  # waits for the outstanding write
    r.commit(w, "y")
    t.join(JOIN)
    assert out["value"][2] == "y"
    t, out = _spawn(r.acquire_ready, None)
    t.join(JOIN)
    assert isinstance(out.get("error"), RingClosed) and not isinstance(out["error"], RingCancelled)


def test_cancel_wakes_everyone(hb):
    r = hb.Ring(1)
    s, _ = r.acquire_free(0)
    tp, op = _spawn(r.acquire_free, None)  # blocked: full
    tc, oc = _spawn(r.acquire_ready, None)  # blocked: nothing ready
    tp.join(0.1)
    tc.join(0.01)
    assert tp.is_alive() and tc.is_alive()
    r.cancel()
    tp.join(JOIN)
    tc.join(JOIN)
    assert isinstance(op.get("error"), RingCancelled)
    assert isinstance(oc.get("error"), RingCancelled)
    with pytest.raises(RingCancelled):
        r.commit(s, None)
    with pytest.raises(RingCancelled):
        r.acquire_free(0)
    r.release(s)  # no-ops after cancel: cleanup paths never raise
    r.discard(s)
    r.close()
    r.cancel()
    assert r.cancelled and r.closed


class _DecodeError(Exception):
    pass


def test_fail_propagates_after_committed_frames(hb):
    r = hb.Ring(4)
    for i in range(2):
        s, _ = r.acquire_free(0)
        r.commit(s, i)
    err = _DecodeError("corrupt packet at frame 2")
    r.fail(err)
    assert r.failed
    with pytest.raises(RingClosed):
        r.acquire_free(0)
    assert [r.acquire_ready(0)[2] for _ in range(2)] == [0, 1]
    with pytest.raises(_DecodeError) as ei:
        r.acquire_ready(0)
    assert ei.value is err
    with pytest.raises(_DecodeError):  # stays failed
        r.acquire_ready(None)


def test_fail_wakes_blocked_consumer_in_thread(hb):
    r = hb.Ring(2)
    t, out = _spawn(r.acquire_ready, None)
    t.join(0.05)
    err = ValueError("boom")
    r.fail(err)
    t.join(JOIN)
    assert out.get("error") is err


def test_wait_releases_gil(hb):
    """A consumer blocked in acquire_ready must not hold the GIL: this thread runs Python and commits."""
    r = hb.Ring(2)
    t, out = _spawn(r.acquire_ready, 10.0)
    t.join(0.05)
    n = 0
    for i in range(20000):  # Python work while the other thread waits
        n += i
    s, _ = r.acquire_free(1.0)
    r.commit(s, n)
    t.join(JOIN)
    assert out.get("value", (None, None, None))[2] == n


def test_ctrl_c_interrupts_blocked_wait(hb):
    import signal
    # a shell that starts pytest in the background without job control leaves SIGINT ignored; use Python's handler
    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    r = hb.Ring(1)
    timer = threading.Timer(0.15, _thread.interrupt_main)
    try:
        with pytest.raises(KeyboardInterrupt):
            timer.start()  # inside the block: the interrupt cannot land outside it
            r.acquire_ready(10.0)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, prev)


# ---------------------------------------------------------------------------------------------------------------
# copies
# ---------------------------------------------------------------------------------------------------------------
def _pack_ref(planes):
    return np.concatenate([np.ascontiguousarray(p).view(np.uint8).reshape(-1) for p in planes])


def _padded(shape, dtype, pad, rng):
    """An array of ``shape`` whose rows are padded by ``pad`` elements (a view into a wider array)."""
    h, w = shape[0], shape[1]
    rest = shape[2:]
    big = rng.randint(0, 1024 if dtype == np.uint16 else 256, size=(h, w + pad) + rest).astype(dtype)
    return big[:, :w]


@pytest.mark.parametrize("shape,dtype,pad", [
    ((1, 1), np.uint8, 0), ((1, 1), np.uint8, 3), ((3, 5), np.uint8, 0), ((3, 5), np.uint8, 11),
    ((3, 5), np.uint16, 0), ((3, 5), np.uint16, 7), ((7, 9, 3), np.uint8, 5), ((64, 33), np.uint16, 31)])
def test_stage_unstage_planes_match_numpy(hb, shape, dtype, pad):
    rng = np.random.RandomState(1)
    h, w = shape[0], shape[1]
    y = _padded(shape, dtype, pad, rng)
    ch = ((h + 1) // 2, (w + 1) // 2) + shape[2:]
    u = _padded(ch, dtype, pad, rng)
    v = _padded(ch, dtype, pad, rng)
    ref = _pack_ref([y, u, v])
    dst = np.full(ref.size + 13, 0xAB, np.uint8)
    end = hb.stage_planes(dst, 5, [_host.array_rows(p) for p in (y, u, v)], 0)
    assert end == 5 + ref.size
    np.testing.assert_array_equal(dst[5:5 + ref.size], ref)
    assert (dst[:5] == 0xAB).all() and (dst[5 + ref.size:] == 0xAB).all()  # nothing outside written
    # back into padded destinations: padding must stay untouched
    outs = [_padded(p.shape, dtype, pad + 2, rng) for p in (y, u, v)]
    before = [o.base.copy() if o.base is not None else o.copy() for o in outs]
    end = hb.unstage_planes(dst, 5, [_host.array_rows(o) for o in outs], 3)
    assert end == 5 + ref.size
    for o, p, b in zip(outs, (y, u, v), before):
        np.testing.assert_array_equal(o, p)
        full = o.base if o.base is not None else o
        w_ = p.shape[1]
        np.testing.assert_array_equal(full[:, w_:], b[:, w_:])


@pytest.mark.parametrize("fmt", ["yuv420p", "yuv420p10le", "yuv444p", "rgb24"])
@pytest.mark.parametrize("size", [(1, 1), (5, 3), (33, 17)])
def test_stage_pyav_planes(hb, fmt, size):
    av = pytest.importorskip("av")
    w, h = size
    if fmt.startswith("yuv420") and (w < 2 or h < 2):
        w, h = 2, 2  # libav refuses odd 1x1 4:2:0 frames on some builds
    f = av.VideoFrame(w, h, fmt)
    bps = 2 if "10" in fmt else 1
    rng = np.random.RandomState(2)
    refs = []
    for p in f.planes:
        a = np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)
        a[:] = rng.randint(0, 256, size=a.shape)
        row_bytes = p.width * bps * (3 if fmt == "rgb24" else 1)
        refs.append(a[:, :row_bytes])
    planes = [(p, 0, p.line_size, r.shape[1], p.height) for p, r in zip(f.planes, refs)]
    ref = _pack_ref(refs)
    dst = np.zeros(ref.size, np.uint8)
    assert hb.stage_planes(dst, 0, planes, 0) == ref.size
    np.testing.assert_array_equal(dst, ref)
    # and back into a fresh frame's planes
    g = av.VideoFrame(w, h, fmt)
    hb.unstage_planes(dst, 0, [(p, 0, p.line_size, r.shape[1], p.height) for p, r in zip(g.planes, refs)], 0)
    for p, r in zip(g.planes, refs):
        np.testing.assert_array_equal(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :r.shape[1]], r)


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_copy2d_multithreaded_large(hb, threads):
    rng = np.random.RandomState(3)
    rows, row_bytes, ss, ds = 1037, 3 * 1283, 3 * 1283 + 64, 3 * 1283 + 17
    src = rng.randint(0, 256, size=rows * ss, dtype=np.uint8)
    dst = np.zeros(rows * ds, np.uint8)
    hb.copy2d(dst, 0, ds, src, 0, ss, row_bytes, rows, threads)
    np.testing.assert_array_equal(dst.reshape(rows, ds)[:, :row_bytes], src.reshape(rows, ss)[:, :row_bytes])
    assert (dst.reshape(rows, ds)[:, row_bytes:] == 0).all()
    flat = np.zeros(src.size, np.uint8)  # contiguous fast path, split by bytes
    hb.copy2d(flat, 0, src.size, src, 0, src.size, src.size, 1, threads)
    np.testing.assert_array_equal(flat, src)


def test_copy_argument_errors(hb):
    src = np.arange(100, dtype=np.uint8)
    dst = np.zeros(50, np.uint8)
    with pytest.raises(ValueError):
        hb.copy2d(dst, 0, 10, src, 0, 10, 10, 6, 0)  # dst too small
    with pytest.raises(ValueError):
        hb.copy2d(dst, 0, 10, src, 95, 10, 10, 1, 0)  # src overrun
    with pytest.raises(ValueError):
        hb.copy2d(dst, 0, 4, src, 0, 10, 8, 2, 0)  # dst rows overlap
    with pytest.raises(ValueError):
        hb.copy2d(dst, -1, 10, src, 0, 10, 10, 1, 0)
    with pytest.raises(TypeError):
        hb.copy2d(b"\0" * 100, 0, 10, src, 0, 10, 10, 1, 0)  # read-only destination
    with pytest.raises(TypeError):
        hb.copy2d(np.zeros((10, 10), np.uint8)[:, :5], 0, 5, src, 0, 10, 5, 2, 0)  # not contiguous
    with pytest.raises(TypeError):
        hb.copy2d(dst, 0, 10, object(), 0, 10, 10, 1, 0)
    with pytest.raises(ValueError):
        hb.copy2d(src, 0, 10, src, 5, 10, 10, 3, 0)  # overlapping source and destination
    with pytest.raises(ValueError):
        hb.stage_planes(dst, 0, [(src, 0, 10, 10, 6)], 0)
    hb.copy2d(dst, 0, 10, src, 0, 10, 0, 5, 0)  # empty copies are fine
    hb.copy2d(dst, 0, 10, src, 0, 10, 10, 0, 0)
    assert (dst == 0).all()


def test_copy_releases_gil(hb):
    """While one large copy runs, another Python thread runs: it writes a marker into the *end* of the source,
    which reaches the destination only if that thread ran before the copy got there (GIL released). On a loaded
    machine the helper may be scheduled late, so attempts grow the copy (64 MB .. 512 MB)."""
    go = threading.Event()
    counts = []
    for attempt in range(6):
        n = (64 << 20) << min(attempt, 3)
        src = np.zeros(n, np.uint8)
        dst = np.ones(n, np.uint8)
        ticks = [0]
        stop = [False]

        def helper():
            go.wait()
            src[-(1 << 20):] = 7
            while not stop[0]:
                ticks[0] += 1

        t = threading.Thread(target=helper, daemon=True)
        t.start()
        time.sleep(0.02)
        go.set()
        hb.copy2d(dst, 0, n, src, 0, n, n, 1, 1)  # one thread: the copy walks the buffer front to back
        stop[0] = True
        t.join(JOIN)
        go.clear()
        marked = int(np.count_nonzero(dst[-(1 << 20):] == 7))
        counts.append((n >> 20, marked, ticks[0]))
        del src, dst
        if marked:
            break
    assert counts[-1][1] > 0, f"the copy never let another Python thread run (MB, marker bytes, ticks): {counts}"


# ---------------------------------------------------------------------------------------------------------------
# HostRing wrapper and loader
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cpp", "python"])
def test_host_ring_wrapper(name, monkeypatch):
    if name == "cpp":
        _cpp_backend()
    ring = _host.HostRing(2, 64, backend_name=name)
    assert ring.backend.name == name and not ring.pinned and ring.num_slots == 2
    slot, seq = ring.acquire_free(0)
    y = np.arange(12, dtype=np.uint8).reshape(3, 4)
    n = ring.stage(slot, [_host.array_rows(y)])
    assert n == 12
    assert ring.tensor(slot)[:12].tolist() == list(range(12))  # the torch view shares memory with array()
    ring.commit(slot, {"pts": 7})
    slot2, seq2, meta = ring.acquire_ready(0)
    assert (slot2, seq2, meta) == (slot, 0, {"pts": 7})
    out = np.zeros((3, 6), np.uint8)[:, :4]
    ring.unstage(slot2, [_host.array_rows(out)])
    assert (out == y).all()
    ring.release(slot2)
    ring.close()
    with pytest.raises(RingClosed):
        ring.acquire_ready(0)
    assert ring.stats()["closed"]


def test_status_and_forced_python(monkeypatch):
    monkeypatch.setenv(_host.ENV_BACKEND, "python")
    st = _host.status()
    assert st["active"] == "python" and st["how"] == "forced"
    assert _host.backend() is _host.python_backend()
    monkeypatch.setenv(_host.ENV_BACKEND, "bogus")
    with pytest.raises(ValueError):
        _host.backend()


def test_status_reports_cpp_when_loaded(monkeypatch):
    _cpp_backend()
    monkeypatch.setenv(_host.ENV_BACKEND, "cpp")
    st = _host.status()
    assert st["active"] == "cpp" and st["how"] in ("prebuilt", "jit") and st["path"]


def test_import_does_not_build():
    """Importing vsr_engine (and vsr_engine._host) never compiles: only first use does."""
    import subprocess
    import sys
    code = ("import os, vsr_engine, vsr_engine._host as h, vsr_engine.pipeline, vsr_engine.colour;"
            "s = h.status(load=False); assert s['active'] is None, s;"
            "import glob; b = os.path.join(os.environ['VSR_ENGINE_HOME'], 'build', 'host_ext-*');"
            "assert not glob.glob(b), glob.glob(b); print('ok')")
    env = dict(os.environ)
    env.pop(_host.ENV_BACKEND, None)
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-2000:]
