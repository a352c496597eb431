"""TDAN: both checkpoint layouts against a reference written from the official code (tests/tdan_reference.py),
the whole-module pickle read without running its code, edge-frame policies, the deformable-conv fallback, and the
Engine's windows equal to the whole clip."""
from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest
import torch

import tdan_reference as R
from vsr_engine import load_model
from vsr_engine.checkpoint import CheckpointError
from vsr_engine.engine import Engine
from vsr_engine.models.tdan import TDAN, deform_conv2d_torch, frame_indices


@pytest.fixture(autouse=True)
def _deform_op_eager():
    """The model's deformable convs through the op's eager torch path: these tests check the network, the op's
    Triton / CUDA kernels are tested in tests/ops/test_deform_conv2d.py (and the interpreter would take minutes)."""
    try:
        from vsr_engine.ops import use_backend
        import vsr_engine.ops.deform_conv2d  # noqa: F401
    except ImportError:
        yield
        return
    with use_backend("torch", "deform_conv2d"):
        yield


def official_net(seed=0):
    torch.manual_seed(seed)
    net = R.TDAN_VSR()
    with torch.no_grad():   # offsets of several pixels: many samples fall outside the 10x12 frames
        for name in ("off2d_1", "off2d_2", "off2d_3", "off2d"):
            getattr(net, name).bias.normal_(0, 3.0)
    return net.eval()


def clip(t=6, h=10, w=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, h, w, generator=g, dtype=torch.float64)


def save_module_pickle(net, path, legacy=False):
    """``torch.save(model)`` as the official training did: classes named model.TDAN_VSR / model.Res_Block /
    modules.deform_conv.ConvOffset2d."""
    fake = {"model": types.ModuleType("model"), "modules": types.ModuleType("modules"),
            "modules.deform_conv": types.ModuleType("modules.deform_conv")}
    classes = {R.TDAN_VSR: "model", R.Res_Block: "model", R.ConvOffset2d: "modules.deform_conv"}
    old = {c: c.__module__ for c in classes}
    saved = {k: sys.modules.get(k) for k in fake}
    try:
        for c, m in classes.items():
            c.__module__ = m
            setattr(fake[m], c.__name__, c)
        sys.modules.update(fake)
        torch.save(net, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for c, m in old.items():
            c.__module__ = m
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def run_ours(model, frames):
    with torch.no_grad():
        return model.double()(frames.unsqueeze(0))[0]


# ---------------------------------------------------------------------------------------------------------------
def test_deform_fallback_equals_reference():
    g = torch.Generator().manual_seed(0)
    for (h, w) in ((7, 9), (1, 6), (5, 1)):
        x = torch.randn(2, 16, h, w, generator=g, dtype=torch.float64)
        off = torch.randn(2, 2 * 4 * 9, h, w, generator=g, dtype=torch.float64) * 3   # many samples outside
        off[0, :4] = torch.tensor([-1.0, h, -0.5, w - 0.5]).view(4, 1, 1)          # exactly on the borders
        wt = torch.randn(8, 16, 3, 3, generator=g, dtype=torch.float64)
        ref = R.deform_conv_ref(x, off, wt)
        got = deform_conv2d_torch(x, off, wt)
        assert (got - ref).abs().max().item() < 1e-10, (h, w)
    # the reference's two rules differ (1zb / MSRA v1 kernel vs torchvision) only through border samples
    x = torch.randn(1, 8, 6, 6, generator=g, dtype=torch.float64)
    wt = torch.randn(8, 8, 3, 3, generator=g, dtype=torch.float64)
    small = torch.rand(1, 2 * 9, 6, 6, generator=g, dtype=torch.float64) * 0.2     # interior pixels: equal
    a, b = R.deform_conv_ref(x, small, wt), R.deform_conv_ref(x, small, wt, rule="msra")
    assert torch.allclose(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2]) and not torch.allclose(a, b)


@pytest.mark.parametrize("edge", ["official", "reflection"])
def test_frame_indices_follow_each_policy(edge):
    for num in range(3, 9):
        for t in range(num):
            assert frame_indices(t, num, 2, edge) == R.official_index(t, num, edge), (num, t)
    assert frame_indices(0, 1, 2, edge) == [0] * 5 and max(frame_indices(1, 2, 2, edge)) == 1


@pytest.mark.parametrize("legacy", [False, True])
def test_official_whole_module_pickle_equals_official_code(tmp_path, legacy):
    net = official_net()
    path = str(tmp_path / "model.pt")
    save_module_pickle(net, path, legacy=legacy)
    m = load_model("tdan", weights=path, edge="official")
    assert "official TDAN names" in m.weights_layout
    frames = clip()
    with torch.no_grad():
        ref = R.run_official(net.double(), frames, "official")
    assert (run_ours(m, frames) - ref).abs().max().item() < 1e-9


def test_mmagic_checkpoint_equals_official_code_with_reflection(tmp_path):
    net = official_net(seed=3)
    sd = R.to_mmagic(net.state_dict())
    path = str(tmp_path / "tdan_mmagic.pth")
    torch.save({"meta": {"mmagic_version": "1.0"}, "state_dict": {
        **{"generator." + k: v for k, v in sd.items()}, "step_counter": torch.tensor(7)}}, path)
    m = load_model("tdan", weights=path)
    assert m.edge == "reflection" and "generator." in m.weights_layout
    frames = clip(t=5, seed=2)
    with torch.no_grad():
        ref = R.run_official(net.double(), frames, "reflection")
    assert (run_ours(m, frames) - ref).abs().max().item() < 1e-9
    # the trainer's window form: centre output and the aligned LR frames of the official forward
    with torch.no_grad():
        hr, aligned = m.forward_window(frames[:5].unsqueeze(0))
        out, lrs = net(frames[:5].unsqueeze(0) - 0.5)
    assert (hr - 0.5 - out).abs().max().item() < 1e-9 and (aligned - 0.5 - lrs).abs().max().item() < 1e-9


def test_pickle_code_never_runs_and_wrong_files_are_refused(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    net = official_net()
    net.evil = Evil()                    # an attribute of the pickled module
    path = str(tmp_path / "evil.pt")
    save_module_pickle(net, path)
    m = load_model("tdan", weights=path, edge="official")   # the tensors are read, the call is not made
    assert not marker.exists() and m.weights_layout
    # a pickle without module tensors: one clear error saying how to convert
    p2 = str(tmp_path / "obj.pt")
    torch.save({"net": Evil()}, p2)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_model("tdan", weights=p2)
    assert not marker.exists()
    # a TDAN checkpoint is recognised as one when another model is asked for
    p3 = str(tmp_path / "t.pth")
    torch.save(R.to_mmagic(official_net().state_dict()), p3)
    with pytest.raises(CheckpointError, match="tdan checkpoint"):
        load_model("basicvsr", weights=p3)


def test_architecture_sizes_come_from_the_file(tmp_path):
    small = TDAN(num_feat=16, num_extract_block=2, num_reconstruct_block=3, deform_groups=4)
    p = str(tmp_path / "s.pth")
    torch.save({"params": small.state_dict()}, p)
    m = load_model("tdan", weights=p)
    assert (m.num_feat, len(m.feat_extract[1]), len(m.reconstruct[1])) == (16, 2, 3)
    assert m.align_1.conv_offset.out_channels == 4 * 18


# ---------------------------------------------------------------------------------------------------------------
def _random_tdan(scale=4.0):
    torch.manual_seed(0)
    m = TDAN(num_feat=16, num_extract_block=1, num_reconstruct_block=1, deform_groups=8, scale=scale)
    with torch.no_grad():
        for mod in m.modules():
            if hasattr(mod, "conv_offset"):
                mod.conv_offset.bias.normal_(0, 2.0)
    return m.eval()


def _real_frames(data_dir, n=9, h=12, w=16):
    from vsr_engine.training.data import list_images, read_rgb
    files = list_images(os.path.join(data_dir, "reds_lr_demo_000"))[:n]
    return [np.ascontiguousarray(read_rgb(f)[60:60 + h, 100:100 + w]) for f in files]


def _whole(m, frames, dtype=torch.float32):
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in frames]).unsqueeze(0)
    with torch.no_grad():
        y = m.to(dtype)(x.to(dtype))[0].float()
    m.float()
    return [(t.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy() for t in y]


def _maxdiff(a, b):
    assert len(a) == len(b)
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


@pytest.mark.parametrize("edge", ["reflection", "official"])
def test_engine_windows_equal_whole_clip_on_a_real_clip(data_dir, edge):
    m = _random_tdan()
    m.edge = edge
    fr = _real_frames(data_dir)
    ref = _whole(m, fr)
    for window, overlap in ((2, 2), (3, 0), (4, 5)):
        e = Engine(m, device="cpu", dtype="fp32", window=window, overlap=overlap)
        assert e.mode == "blackbox" and e.overlap >= 2
        assert _maxdiff(list(e.run(fr)), ref) == 0, (window, overlap)


def test_engine_tiles_scale_and_half_precision(data_dir, monkeypatch):
    import vsr_engine.memory as memory
    m = _random_tdan()
    fr = _real_frames(data_dir, n=5, h=16, w=20)
    ref = _whole(m, fr)
    # tiles whose pad covers the frame compute the whole frame: equal to untiled
    monkeypatch.setattr(memory, "tile_pad", lambda scale: 64)
    e = Engine(m, device="cpu", dtype="fp32", window=3, overlap=2, tile=10)
    out = list(e.run(fr))
    assert e.last_summary.tiles and _maxdiff(out, ref) == 0
    # a pad of 4 LR pixels: seams differ from untiled (the tiling is not a no-op), the mean stays close
    monkeypatch.setattr(memory, "tile_pad", lambda scale: 4)
    out4 = list(Engine(m, device="cpu", dtype="fp32", window=3, overlap=2, tile=10).run(fr))
    assert _maxdiff(out4, ref) > 0
    # --scale r: the x4 output resampled (MATLAB bicubic) to floor(r*h) x floor(r*w)
    from vsr_engine.imresize import imresize_torch
    m25 = _random_tdan(scale=2.5)
    out25 = list(Engine(m25, device="cpu", dtype="fp32", window=3, overlap=2).run(fr))
    assert out25[0].shape == (40, 50, 3)
    x = torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in fr]).unsqueeze(0)
    with torch.no_grad():
        y4 = _random_tdan()(x)[0]
    ref25 = imresize_torch(y4, 40, 50, 2.5 / 4).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    assert _maxdiff(out25, list(ref25)) <= 1
    # fp16 / bf16 windows equal the same dtype's whole clip within a grey level or two
    for dt in ("fp16", "bf16"):
        torch_dt = {"fp16": torch.float16, "bf16": torch.bfloat16}[dt]
        got = list(Engine(_random_tdan(), device="cpu", dtype=dt, window=3, overlap=2).run(fr))
        assert _maxdiff(got, _whole(_random_tdan(), fr, torch_dt)) <= 2
        assert _maxdiff(got, ref) <= 12


def test_load_model_tdan_options():
    m = load_model("tdan", weights=False, edge="official", scale=3)
    assert isinstance(m, TDAN) and m.edge == "official" and m.scale == 3.0 and m.output_size(10, 12) == (30, 36)
    with pytest.raises(ValueError, match="edge policy"):
        load_model("tdan", weights=False, edge="mirror")


def test_weights_lookup_bundled_then_official_files_in_the_cache(tmp_path):
    from vsr_engine import weights as W
    m = load_model("tdan")                      # offline, empty cache: the weights trained here (bundled)
    assert m.weights_path.endswith("tdan_bi_here.safetensors") and m.num_feat == 32
    assert W.default_variant("tdan") == "bi-here"
    # an mmagic file the user put in the cache is used instead
    sd = R.to_mmagic(official_net().state_dict())
    os.makedirs(W.cache_dir(), exist_ok=True)
    name = W.KNOWN["tdan"]["mmagic-bi"].filename
    torch.save({"meta": {}, "state_dict": {"generator." + k: v for k, v in sd.items()}}, os.path.join(W.cache_dir(), name))
    assert W.default_variant("tdan") == "mmagic-bi"
    m2 = load_model("tdan")
    assert m2.weights_path.endswith(name) and m2.num_feat == 64
