"""vsr_engine.vapoursynth: the random-access frame server gives every frame exactly as ``Engine.run`` does (in
order, in a seeded random order with backward seeks, from 4 threads; scene cuts), with its caches bounded; the
VapourSynth binding (skipped where VapourSynth is not installed) gives the same frames, in any order, props kept.

Exactness bound: 0. The server steps the same windows (frames, left context, lookahead, scene-relative indices)
through the Engine's own window step with the same carried state, on the same CPU kernels and batch shapes, so
the float outputs are bit-identical; the Engine's outputs are captured as floats (before its uint8 rounding) by
wrapping ``Engine._step_window``, and its uint8 frames are compared too."""
from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
import torch

from vsr_engine import load_model, ops
from vsr_engine.engine import Engine
from vsr_engine.io.common import VsrInputError
from vsr_engine.vapoursynth import RandomAccessUpscaler, window_bounds

torch.set_num_threads(1)
N, H, W = 13, 16, 16   # window 3 + overlap 2: windows at 0, 3, 6, 9; the last one takes 9..12 whole
OPTS = dict(device="cpu", dtype="fp32", tile=0, window=3, overlap=2)


@pytest.fixture(autouse=True)
def _torch_ops():
    # the ops' torch references (TRITON_INTERPRET=1 would interpret the Triton kernels: slow, not under test here)
    with ops.use_backend("torch"):
        yield


def small(name):
    """Frame size for ``name``: 16x16, DUF (the costliest step) 8x8."""
    return 8 if name == "duf" else H


def tiny(name):
    torch.manual_seed(0)
    if name == "basicvsr":
        return load_model("basicvsr", weights=False, num_feat=8, num_block=1)
    if name == "realbasicvsr":
        return load_model("realbasicvsr", weights=False, num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=1)
    if name == "duf":
        return load_model("duf", weights=False)
    return load_model(name, weights=False, **OTHERS[name])


# the other registered models at tiny sizes (TDAN and USRDA run as black boxes with context, the others split)
OTHERS = {"tdan": dict(num_feat=16, num_extract_block=1, num_reconstruct_block=1),
          "dscvsr": dict(num_feat=8), "basicvsr-meta": dict(num_feat=8, num_block=1, head_hidden=16, scale=2.5),
          "usrda": dict(num_feat=8, enc_blocks=1, dec_blocks=1)}


def clip_frames(n=N, cut=None, seed=0, size=H):
    """uint8 (size, size, 3) frames; with ``cut`` a dark scene then a bright one (the Engine's detector finds it)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(40, 200, (size, size, 3))
    out = []
    for i in range(n):
        f = base + rng.integers(-20, 21, (size, size, 3))
        if cut is not None:
            f = f // 4 + (150 if i >= cut else 0)
        out.append(np.clip(f, 0, 255).astype(np.uint8))
    return out


def engine_run(model, frames, **kw):
    """Engine.run's outputs as floats (clamped, before rounding), its uint8 frames and summary."""
    e = Engine(model, **{**OPTS, **kw})
    floats = []
    step = e._step_window

    def spy(proc, x, s, n, left):
        for i, y in step(proc, x, s, n, left):
            floats.append(y.detach().float().clamp(0, 1).permute(1, 2, 0).numpy().copy())
            yield i, y
    e._step_window = spy
    u8 = list(e.run(frames))
    assert len(floats) == len(u8) == len(frames)
    return floats, u8, e.last_summary


def server(model, frames, max_windows=2, max_states=2, **kw):
    return RandomAccessUpscaler(lambda j: frames[j], len(frames), Engine(model, **{**OPTS, **kw}),
                                max_windows=max_windows, max_states=max_states)


def request(srv, order, threads=1):
    """Frames in ``order`` (from ``threads`` threads sharing the list), checking the caches after every frame."""
    got, q = {}, queue.Queue()
    for k, i in enumerate(order):
        q.put((k, i))
    errors = []

    def work():
        while True:
            try:
                k, i = q.get_nowait()
            except queue.Empty:
                return
            try:
                got[k] = (i, srv.get(i).copy())
                assert len(srv._outs) <= srv.max_windows and len(srv._states) <= srv.max_states
            except BaseException as e:   # re-raised below
                errors.append(e)
    ths = [threading.Thread(target=work) for _ in range(threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    if errors:
        raise errors[0]
    return [got[k] for k in range(len(order))]


def maxdiff(got, ref):
    return max(float(np.abs(y - ref[i]).max()) for i, y in got)


def orders(n, seed=1):
    rng = np.random.default_rng(seed)
    shuffled = [int(i) for i in rng.permutation(n)]
    seeks = [n - 1, 0, n // 2, n // 2 - 1, 1, n - 2, 0, n - 1]   # repeated and backward seeks
    return {"in order": list(range(n)), "random": shuffled + seeks, "4 threads": shuffled + seeks + shuffled}


def test_window_bounds_are_the_engines():
    # 13 frames, window 3, overlap 2: [0,3) [3,6) [6,9) with 2 frames of lookahead, then the last 4 whole
    starts, s = [], 0
    while s < 13:
        e, la = window_bounds(s, 13, 3, 2)
        starts.append((s, e, la))
        s = e
    assert starts == [(0, 3, 5), (3, 6, 8), (6, 9, 11), (9, 13, 13)]
    assert window_bounds(0, 5, 3, 2) == (3, 5) and window_bounds(0, 4, 3, 2) == (4, 4)


@pytest.mark.parametrize("name", ["basicvsr", "realbasicvsr", "duf"])
def test_any_order_and_threads_equal_engine_run(name):
    m = tiny(name)
    frames = clip_frames(size=small(name))
    ref, u8, _ = engine_run(m, frames)
    for how, order in orders(N).items():
        srv = server(m, frames)
        got = request(srv, order, threads=4 if how == "4 threads" else 1)
        assert maxdiff(got, ref) == 0.0, how
        assert srv.stats["peak_windows"] <= 2 and srv.stats["peak_states"] <= 2
        if how == "in order":   # 4 windows, each computed once (recurrent: from the state the last one left)
            assert srv.stats["computed"] == 4
            q = [(np.clip(y, 0, 1) * 255).round().astype(np.uint8) for _, y in got]
            assert all(np.array_equal(a, b) for a, b in zip(q, u8))
    assert srv.e.mode == ("sliding" if name == "duf" else "split")


def test_every_registered_model_is_covered():
    from vsr_engine import model_names
    assert set(model_names()) == {"basicvsr", "realbasicvsr", "duf", *OTHERS}


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_models_in_random_order_equal_engine_run(name):
    m = tiny(name)
    frames = clip_frames()
    ref = engine_run(m, frames)[0]
    srv = server(m, frames)
    assert maxdiff(request(srv, orders(N)["random"]), ref) == 0.0
    assert srv.e.mode == ("blackbox" if name in ("tdan", "usrda") else "split")
    assert srv.output_size() == ((40, 40) if name == "basicvsr-meta" else (64, 64))


@pytest.mark.parametrize("name", ["basicvsr", "duf"])
def test_explicit_cuts_are_clip_boundaries(name):
    m = tiny(name)
    frames = clip_frames(size=small(name))
    ref = engine_run(m, frames[:5])[0] + engine_run(m, frames[5:])[0]   # each scene alone
    whole = engine_run(m, frames)[0]
    for cuts in ([5], lambda i: i == 5)[:2 if name == "basicvsr" else 1]:
        srv = RandomAccessUpscaler(lambda j: frames[j], N, Engine(m, **OPTS), cuts=cuts, max_windows=1,
                                   max_states=1)
        got = request(srv, orders(N)["random"])
        assert maxdiff(got, ref) == 0.0
        assert max(float(np.abs(whole[i] - ref[i]).max()) for i in range(5, N)) > 0   # the cut matters


def test_detected_cuts_equal_engine_run():
    m = tiny("basicvsr")
    frames = clip_frames(cut=7)
    ref, _, summary = engine_run(m, frames, scene_cuts="on")
    assert summary.scene_cuts == [7]
    srv = server(m, frames, scene_cuts="on")
    got = request(srv, orders(N)["4 threads"], threads=4)
    assert maxdiff(got, ref) == 0.0


def test_bad_input_and_index():
    m = tiny("basicvsr")
    frames = clip_frames()
    srv = server(m, frames)
    with pytest.raises(IndexError):
        srv.get(N)
    with pytest.raises(VsrInputError, match="expected"):
        RandomAccessUpscaler(lambda j: np.zeros((4, 4)), 3, Engine(m, **OPTS))
    with pytest.raises(VsrInputError, match="nothing to upscale"):
        RandomAccessUpscaler(lambda j: frames[j], 0, Engine(m, **OPTS))
    odd = [frames[0], frames[1][:8]]
    with pytest.raises(VsrInputError, match="differs"):
        RandomAccessUpscaler(lambda j: odd[j], 2, Engine(m, **OPTS)).get(1)


# ------------------------------------------------------------------------------------------------ VapourSynth
def vs_clip(vs, frames, props=None, fmt=None):
    """An RGBS clip of uint8 ``frames`` (/255, as the Engine reads them), prop ``idx`` = n, extra ``props``."""
    core = vs.core
    blank = core.std.BlankClip(format=vs.RGBS, width=W, height=H, length=len(frames))

    def put(n, f):
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[...] = frames[n][..., p] / np.float32(255)
        out.props["idx"] = n
        for k, v in (props or {}).get(n, {}).items():
            out.props[k] = v
        return out
    return core.std.ModifyFrame(blank, blank, put)


def vs_rgb(f):
    return np.stack([np.asarray(f[p]) for p in range(3)], axis=-1)


def vs_requests(clip, order, how):
    """{n: (frame as (H, W, 3), props)} requested in ``order``: one by one, async, or from 4 Python threads."""
    if how == "async":
        futs = [(n, clip.get_frame_async(n)) for n in order]
        frames = [(n, f.result()) for n, f in futs]
    elif how == "threads":
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(4) as ex:
            frames = list(zip(order, ex.map(clip.get_frame, order)))
    else:
        frames = [(n, clip.get_frame(n)) for n in order]
    return [(n, vs_rgb(f).astype(np.float32), dict(f.props)) for n, f in frames]


def test_vapoursynth_binding_equals_engine_run():
    vs = pytest.importorskip("vapoursynth")
    from vsr_engine.vapoursynth import upscale
    vs.core.num_threads = 4
    m = tiny("basicvsr")
    frames = clip_frames()
    ref = engine_run(m, frames)[0]
    order = orders(N)["random"]
    for how, req in (("in order", list(range(N))), ("random", order), ("async", order), ("threads", order)):
        out = upscale(vs_clip(vs, frames), m, **OPTS)
        assert (out.width, out.height, out.format.id) == (4 * W, 4 * H, vs.RGBS.value)
        got = vs_requests(out, req, how)
        assert max(float(np.abs(y - ref[n]).max()) for n, y, _ in got) == 0.0, how
        assert all(p["idx"] == n for n, _, p in got)


@pytest.mark.parametrize("prop", ["_SceneChangePrev", "_SceneChangeNext"])
def test_vapoursynth_scene_props(prop):
    vs = pytest.importorskip("vapoursynth")
    from vsr_engine.vapoursynth import upscale
    m = tiny("basicvsr")
    frames = clip_frames()
    ref = engine_run(m, frames[:5])[0] + engine_run(m, frames[5:])[0]
    props = {5: {prop: 1}} if prop == "_SceneChangePrev" else {4: {prop: 1}}
    out = upscale(vs_clip(vs, frames, props), m, **OPTS)
    got = vs_requests(out, orders(N)["random"], "async")
    assert max(float(np.abs(y - ref[n]).max()) for n, y, _ in got) == 0.0


def test_vapoursynth_yuv_and_half():
    vs = pytest.importorskip("vapoursynth")
    from vsr_engine.vapoursynth import upscale
    core = vs.core
    m = tiny("basicvsr")
    frames = clip_frames()
    rgb = vs_clip(vs, frames)
    # YUV in: converted to RGBS by core.resize (BT.709), upscaled, converted back when asked
    yuv = core.resize.Bicubic(rgb, format=vs.YUV444P16, matrix_s="709")
    back = core.resize.Bicubic(yuv, format=vs.RGBS, matrix_in_s="709")
    conv = [vs_rgb(back.get_frame(n)).copy() for n in range(N)]
    ref = request(RandomAccessUpscaler(lambda j: conv[j], N, Engine(m, **OPTS)), list(range(N)))
    out = upscale(yuv, m, **OPTS)
    assert out.format.id == vs.RGBS.value
    assert max(float(np.abs(vs_rgb(out.get_frame(n)) - y).max()) for n, y in ref) == 0.0
    out_yuv = upscale(yuv, m, output_format="input", **OPTS)
    assert (out_yuv.format.id, out_yuv.width, out_yuv.height) == (vs.YUV444P16.value, 4 * W, 4 * H)
    assert out_yuv.get_frame(3).props["idx"] == 3
    # RGBH in: RGBH out, the half inputs as the model's input
    half = core.resize.Point(rgb, format=vs.RGBH)
    hin = [vs_rgb(half.get_frame(n)).astype(np.float16) for n in range(N)]
    ref_h = request(RandomAccessUpscaler(lambda j: hin[j], N, Engine(m, **OPTS)), list(range(N)))
    out_h = upscale(half, m, **OPTS)
    assert out_h.format.id == vs.RGBH.value
    assert max(float(np.abs(vs_rgb(out_h.get_frame(n)).astype(np.float32) - y.astype(np.float16)).max())
               for n, y in ref_h) == 0.0


def test_upscale_without_vapoursynth_says_so():
    import importlib.util
    if importlib.util.find_spec("vapoursynth") is not None:
        pytest.skip("VapourSynth is installed here")
    from vsr_engine.vapoursynth import upscale
    with pytest.raises(VsrInputError, match="needs VapourSynth"):
        upscale(None)
