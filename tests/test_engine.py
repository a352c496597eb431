"""Streaming Engine: windowed == whole-sequence where it must be, order and count of frames, bounded memory,
streaming (outputs before the input ends), input kinds, odd sizes, interrupt and exact resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.checkpoint import CheckpointError
from vsr_engine.engine import Engine
from vsr_engine.models import UnknownModelError
from vsr_engine.video import VsrInputError, partial_dir_for

from test_video import FAST_ENV, Nearest, _fast_cpu, make_video, pattern, probe  # noqa: E402,F401 (tests/ on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




def tiny_basicvsr():
    return load_model("basicvsr", weights=False, num_feat=8, num_block=1)


def frames_of(n, w=12, h=10, seed=0):
    rng = np.random.default_rng(seed)
    base = [pattern(i, w, h, seed) for i in range(n)]
    return [np.clip(b.astype(int) + rng.integers(-20, 20, b.shape), 0, 255).astype(np.uint8) for b in base]


def whole(model, frames):
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]).unsqueeze(0)
    with torch.inference_mode():
        y = model(x)[0]
    return [(t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() for t in y]


def maxdiff(a, b):
    assert len(a) == len(b)
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


# ---------------------------------------------------------------------------------------------------------------
# windows
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("window,overlap", [(3, 64), (64, 0), (1, 64), (5, 20)])
def test_split_windows_equal_whole_sequence_when_context_covers_it(window, overlap):
    """The forward state is carried exactly; with lookahead to the end the backward branch is exact too."""
    m = tiny_basicvsr()
    fr = frames_of(13)
    ref = whole(m, fr)
    out = list(Engine(m, window=window, overlap=overlap).run(fr))
    assert maxdiff(out, ref) <= 1          # float re-association only (batched vs per-pair flows)


def test_split_windows_with_short_lookahead_are_close_not_equal():
    m = tiny_basicvsr()
    fr = frames_of(13)
    ref = whole(m, fr)
    out = list(Engine(m, window=4, overlap=1).run(fr))
    assert len(out) == 13
    # frames of the last window (lookahead reaches the end) are exact
    assert maxdiff(out[-5:], ref[-5:]) <= 1


def test_realbasicvsr_split_equals_whole():
    m = load_model("realbasicvsr", weights=False, num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=1)
    fr = frames_of(9)
    assert maxdiff(list(Engine(m, window=2, overlap=20).run(fr)), whole(m, fr)) <= 1


def test_blackbox_mode_equal_whole_when_window_covers_it():
    m = tiny_basicvsr()
    fr = frames_of(7)
    assert maxdiff(list(Engine(m, window=7, overlap=0, mode="blackbox").run(fr)), whole(m, fr)) <= 1
    assert maxdiff(list(Engine(m, window=2, overlap=7, mode="blackbox").run(fr)), whole(m, fr)) <= 1


class IndexModel(torch.nn.Module):
    """Black box that also checks its window: output = nearest x2 of the input."""
    scale = 2

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[1])
        return torch.nn.functional.interpolate(x.flatten(0, 1), scale_factor=2).unflatten(0, x.shape[:2])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9, 17])
@pytest.mark.parametrize("window,overlap", [(1, 0), (2, 1), (4, 2), (8, 0), (3, 5)])
@pytest.mark.parametrize("mode", ["blackbox", "split"])
def test_every_frame_once_in_order(n, window, overlap, mode):
    # frame i is a flat image of value i: the output must be 0, 1, 2, ... once each
    fr = [np.full((3, 4, 3), i, np.uint8) for i in range(n)]
    if mode == "split":
        m = tiny_basicvsr()
        out = list(Engine(m, window=window, overlap=overlap).run(fr))
        assert len(out) == n and all(o.shape == (12, 16, 3) for o in out)
        ref = whole(m, fr)
        # order: each output is closest to its own whole-sequence frame
        for i, o in enumerate(out):
            d = [np.abs(o.astype(int) - r.astype(int)).mean() for r in ref]
            assert int(np.argmin(d)) == i or d[i] <= min(d) + 1e-9
    else:
        m = IndexModel()
        eng = Engine(m, window=window, overlap=overlap)
        out = list(eng.run(fr))
        assert [int(o[0, 0, 0]) for o in out] == list(range(n))
        assert all(o.shape == (6, 8, 3) for o in out)
        assert max(m.calls) <= window + 2 * overlap
        assert eng.last_summary.frames_in == eng.last_summary.frames_out == n


def test_outputs_stream_before_input_ends():
    pulled = []

    def source():
        for i in range(40):
            pulled.append(i)
            yield np.full((4, 4, 3), i, np.uint8)

    eng = Engine(IndexModel(), window=4, overlap=2)
    # the pipeline reads ahead by a bounded amount: window + overlap in the step, 3 input slots + 1 in the
    # source thread's hands, and outputs in flight (4 pending on the device, 3 output slots, 2 in the iterator's
    # queue, 1 in the sink thread's hands) -- independent of the stream's length
    ahead = 4 + 2 + (3 + 1) + (4 + 3 + 2 + 1)
    seen = []
    for k, o in enumerate(eng.run(source())):
        seen.append(len(pulled))
        assert len(pulled) - k <= ahead
    assert len(seen) == 40 and seen[0] <= ahead < 40


# ---------------------------------------------------------------------------------------------------------------
# input kinds, sizes, errors
# ---------------------------------------------------------------------------------------------------------------
def test_input_kinds():
    base = pattern(0, 6, 4)
    kinds = [base, torch.from_numpy(base), torch.from_numpy(base).permute(2, 0, 1).float() / 255,
             base.astype(np.float32) / 255, base[:, :, 0], np.dstack([base, np.full((4, 6), 255, np.uint8)])]
    out = list(Engine(Nearest(4), window=2, overlap=1).run(kinds))
    assert len(out) == len(kinds)
    for o in out[:4]:
        assert np.abs(o.astype(int) - np.repeat(np.repeat(base, 4, 0), 4, 1)).max() <= 1
    assert (out[4][..., 0] == out[4][..., 2]).all()
    # a stacked 4-D array/tensor is a clip too
    assert len(list(Engine(Nearest(2), window=2, overlap=0).run(np.stack([base] * 3)))) == 3


def test_pyav_container_source(tmp_path):
    av = pytest.importorskip("av")
    p = tmp_path / "c.mp4"
    make_video(p, n=6)
    with av.open(str(p)) as c:
        out = list(Engine(Nearest(2), window=4, overlap=1).run(c))
    assert len(out) == 6 and out[0].shape == (48, 64, 3)


@pytest.mark.parametrize("bad,msg", [
    (["not a frame"], "frame 0"),
    ([np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 2), np.uint8)], "frame 1"),
    ([np.zeros((4, 4, 3), np.uint8), np.zeros((6, 4, 3), np.uint8)], "frame 1: size"),
    ([np.full((4, 4, 3), np.nan, np.float32)], "NaN"),
])
def test_bad_frames(bad, msg):
    with pytest.raises(VsrInputError, match=msg):
        list(Engine(Nearest(2), window=2, overlap=0).run(bad))


@pytest.mark.parametrize("w,h", [(1, 1), (3, 2), (2, 3), (7, 5)])
def test_tiny_and_odd_sizes(w, h):
    m = tiny_basicvsr()
    fr = frames_of(4, w, h)
    out = list(Engine(m, window=2, overlap=1).run(fr))
    assert len(out) == 4 and out[0].shape == (4 * h, 4 * w, 3)
    assert maxdiff(list(Engine(m, window=2, overlap=8).run(fr)), whole(m, fr)) <= 1


def test_engine_defaults_and_model_errors(tmp_path):
    e = Engine("basicvsr", weights=False, num_feat=8, num_block=1)
    assert e.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert e.scale == 4 and e.mode == "split"
    with pytest.raises(UnknownModelError, match="choose from: basicvsr"):
        Engine("basicvsrpp", weights=False)
    # a RealBasicVSR checkpoint given for BasicVSR
    r = load_model("realbasicvsr", weights=False, num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=1)
    wpath = tmp_path / "rbvsr.pth"
    torch.save({"params": r.state_dict()}, wpath)
    with pytest.raises(CheckpointError, match="realbasicvsr"):
        Engine("basicvsr", weights=str(wpath))
    with pytest.raises(VsrInputError, match="window"):
        Engine(Nearest(), window=0)
    with pytest.raises(VsrInputError, match="dtype"):
        Engine(Nearest(), dtype="fp8")


# ---------------------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------------------
_MEM_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, torch
    torch.set_num_threads(1)
    sys.path.insert(0, {root!r})
    from vsr_engine import load_model
    from vsr_engine.engine import Engine
    from vsr_engine.summary import _PeakMemory
    torch.manual_seed(0)
    m = load_model("basicvsr", weights=False, num_feat=8, num_block=1)
    class ZeroFlow(torch.nn.Module):        # SPyNet is most of the CPU time; memory is what is measured here
        def forward(self, ref, supp):
            return ref.new_zeros(ref.shape[0], 2, *ref.shape[2:])
    m.spynet = ZeroFlow()
    def frames(k):
        for i in range(k):
            yield np.full((24, 24, 3), (i * 7) % 256, np.uint8)
    res = {{}}
    for n in (12, 100, 1000):                    # 12: warm-up (allocator, lazy init)
        rss = []
        s = Engine(m, window=8, overlap=4).run(frames(n), lambda f: rss.append(_PeakMemory.rss()))
        res[n] = {{"peak": s.peak_memory_bytes, "n": s.frames_out, "rss": rss}}
    print(json.dumps(res))
""")


def test_memory_is_bounded_by_the_window():
    """Peak memory of a 1000-frame stream is within 5 % of a 100-frame one, and the resident memory does not
    grow along the stream (each output frame is 96x96x3 = 27 KB: keeping them would add 27 MB by frame 1000).
    Split mode with the tiny BasicVSR (flows stubbed to zeros to save CPU time)."""
    code = _MEM_SCRIPT.format(root=ROOT)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **FAST_ENV})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    a, b = res["100"], res["1000"]
    assert a["n"] == 100 and b["n"] == 1000
    assert b["peak"] <= 1.05 * a["peak"], (a["peak"], b["peak"])
    # resident memory along the 1000-frame run: the median over frames 900-1000 is that over frames 50-100 (a
    # retained output per frame would raise it by ~25 MB; transient spikes inside a window do not move a median)
    rss = sorted(b["rss"][900:]), sorted(b["rss"][50:100])
    growth = rss[0][len(rss[0]) // 2] - rss[1][len(rss[1]) // 2]
    assert growth < 3 * 2 ** 20, growth


# ---------------------------------------------------------------------------------------------------------------
# interrupt + resume
# ---------------------------------------------------------------------------------------------------------------
class _Interrupt(KeyboardInterrupt):
    pass


@pytest.mark.parametrize("sink_kind", ["video", "folder"])
def test_interrupt_then_resume_equals_uninterrupted(tmp_path, monkeypatch, sink_kind):
    src = tmp_path / "in.mp4"
    make_video(src, n=23, w=16, h=12, audio=True)
    m = tiny_basicvsr()
    ext = ".mp4" if sink_kind == "video" else ""
    ref_out, out = tmp_path / f"ref{ext}", tmp_path / f"out{ext}"
    kw = dict(preset="ultrafast") if sink_kind == "video" else {}
    Engine(m, window=4, overlap=2).run(str(src), str(ref_out), **kw)

    def stop_after_two_windows(done):
        if done >= 8:
            raise _Interrupt()

    monkeypatch.setattr(Engine, "_after_window", staticmethod(stop_after_two_windows))
    with pytest.raises(KeyboardInterrupt):
        Engine(m, window=4, overlap=2).run(str(src), str(out), **kw)
    monkeypatch.setattr(Engine, "_after_window", None)
    assert not out.exists()
    pd = partial_dir_for(str(out))
    st = json.load(open(os.path.join(pd, "state.json")))
    assert st["frames_done"] == 8 and os.path.isfile(os.path.join(pd, "carry.pt"))
    # without --resume the partial output is not silently thrown away
    from vsr_engine.video import VsrOutputError
    with pytest.raises(VsrOutputError, match="--resume"):
        Engine(m, window=4, overlap=2).run(str(src), str(out), **kw)
    # other settings cannot resume it
    with pytest.raises(VsrOutputError, match="window"):
        Engine(m, window=5, overlap=2).run(str(src), str(out), resume=True, **kw)
    s = Engine(m, window=4, overlap=2).run(str(src), str(out), resume=True, **kw)
    assert s.resumed_from == 8 and s.frames_computed == 23 - 8 and s.frames_out == 23
    assert not os.path.exists(pd)
    if sink_kind == "video":
        a, b = probe(ref_out), probe(out)
        assert b["n"] == a["n"] == 23 and b["pts"] == a["pts"] and b["duration"] == a["duration"]
        assert b["packets"] == a["packets"] == probe(src)["packets"]      # audio too
        from test_video import decode_rgb
        assert maxdiff(decode_rgb(out)[0], decode_rgb(ref_out)[0]) == 0  # the same pixels: state carried exactly
    else:
        names = sorted(os.listdir(out))
        assert names == sorted(os.listdir(ref_out)) and len(names) == 23
        from PIL import Image
        for n in names:
            assert (np.asarray(Image.open(out / n)) == np.asarray(Image.open(ref_out / n))).all()


def test_interrupt_then_resume_on_the_cpu_plan_equals_uninterrupted(tmp_path, monkeypatch):
    """dtype='auto' (the CPU plan: bf16 fast step with fp32 islands where the CPU has bf16): the carried forward
    feature is fp32 in the plan, so a resumed run must load it as fp32 (it was re-rounded to bf16 once)."""
    src = tmp_path / "in.mp4"
    make_video(src, n=17, w=16, h=12)
    m = tiny_basicvsr()
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    eng = Engine(m, window=4, overlap=2, dtype="auto")
    eng.run(str(src), str(ref_out))

    def stop_after_two_windows(done):
        if done >= 8:
            raise _Interrupt()

    monkeypatch.setattr(Engine, "_after_window", staticmethod(stop_after_two_windows))
    with pytest.raises(KeyboardInterrupt):
        Engine(m, window=4, overlap=2, dtype="auto").run(str(src), str(out))
    monkeypatch.setattr(Engine, "_after_window", None)
    s = Engine(m, window=4, overlap=2, dtype="auto").run(str(src), str(out), resume=True)
    assert s.resumed_from == 8 and s.frames_out == 17
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(ref_out)) and len(names) == 17
    from PIL import Image
    for n in names:
        assert (np.asarray(Image.open(out / n)) == np.asarray(Image.open(ref_out / n))).all(), n


def test_engine_does_not_cast_the_callers_module():
    """Engine(m, dtype=bf16) runs a cast copy: m keeps its fp32 weights, so a second Engine on m builds the same
    fast step (it takes its tap-sum bf16 weights and fp32 islands from fp32 values)."""
    m = tiny_basicvsr()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    eng = Engine(m, window=4, overlap=2, dtype="bfloat16")
    assert next(eng.model.parameters()).dtype == torch.bfloat16
    for k, v in m.state_dict().items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
