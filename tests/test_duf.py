"""DUF: the network loaded from official-layout HDF5 files (random weights, TF names mangled as the official
LoadParams reads them) against an independent NumPy transcription of the official TF graph (tests/duf_reference.py),
every depth x scale the official code offers, odd sizes, clips shorter than the 7-frame window; torch state dicts;
one clear CheckpointError for wrong files."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vsr_engine import load_model
from vsr_engine.checkpoint import CheckpointError
from vsr_engine.models.duf import DUF, parse_tf_name

import duf_reference as ref  # tests/ on sys.path

h5py = pytest.importorskip("h5py")


def write_official_h5(path, params, extra=True, colon=True):
    """The published layout: group 'params', one dataset per TF variable of G, names mangled; the three
    DynFilter3D constants; (extra) batch-norm zero-debias slots a training graph also holds."""
    suffix = ":0" if colon else ""
    with h5py.File(path, "w") as f:
        g = f.create_group("params")
        for name, v in params.items():
            g[ref.tf_mangle(name) + suffix] = v
        for k in ("G/filter_localexpand", "G/filter_localexpand_1", "G/filter_localexpand_2"):
            g[ref.tf_mangle(k) + suffix] = ref.localexpand()
        if extra:
            g[ref.tf_mangle("G/Rbn1a/G/Rbn1a/moving_mean/biased") + suffix] = np.zeros(64, np.float32)
            g[ref.tf_mangle("G/Rbn1a/G/Rbn1a/moving_mean/local_step") + suffix] = np.zeros((), np.float32)


def clip(t, h, w, seed=0):
    return np.random.default_rng(seed).random((t, h, w, 3))


def run_model(model, frames):
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].double()
    with torch.no_grad():
        return model.double()(x)[0].permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("L,R", [(16, 2), (16, 3), (16, 4), (28, 2), (28, 3), (28, 4), (52, 2), (52, 3), (52, 4)])
def test_official_layout_equals_reference(tmp_path, L, R):
    params = ref.random_params(L, R, seed=L + R)
    path = tmp_path / f"params_{L}L_x{R}.h5"
    write_official_h5(path, params, colon=(L != 28))
    m = load_model("duf", variant=f"{L}L", scale=R, weights=path)
    assert (m.variant, m.uf, m.scale) == (f"{L}L", R, R)
    fr = clip(4, 5, 7, seed=R)                       # 4 frames < 7: zero frames on both ends; odd H, W
    want = ref.upscale_clip(fr, params, L, R)
    got = run_model(m, fr)
    assert got.shape == (4, 5 * R, 7 * R, 3)
    err = np.abs(got - want).max()
    assert err < 1e-9
    # fp32 as shipped: within float rounding
    with torch.no_grad():
        y32 = m.float()(torch.from_numpy(fr).permute(0, 3, 1, 2)[None].float())[0].permute(0, 2, 3, 1).numpy()
    err32 = np.abs(y32 - want).max()
    print(f"DUF-{L}L x{R}: max abs diff vs reference fp64 {err:.3g}, fp32 {err32:.3g} (output range {np.ptp(want):.3g})")
    assert err32 < 2e-4


def test_longer_clip_and_one_frame(tmp_path):
    """Interior frames see 7 real frames; a single frame sees 6 zero frames."""
    params = ref.random_params(16, 4, seed=1)
    path = tmp_path / "p.h5"
    write_official_h5(path, params, extra=False)
    m = load_model("duf-16l", weights=path)
    for t, h, w in ((9, 3, 4), (1, 6, 5)):
        fr = clip(t, h, w, seed=t)
        assert np.abs(run_model(m, fr) - ref.upscale_clip(fr, params, 16, 4)).max() < 1e-9


def test_tf_name_parsing_round_trip():
    for name in ref.official_param_shapes(52, 4):
        assert parse_tf_name(ref.tf_mangle(name) + ":0") == name
    assert parse_tf_name("G_Rbn1a_moving__variance:0") == "G/Rbn1a/moving_variance"
    assert parse_tf_name("G_filter__localexpand__1:0") == "G/filter_localexpand_1"


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_torch_state_dict_round_trip(tmp_path, fmt):
    torch.manual_seed(0)
    m = DUF("16L", 3)
    for p in m.parameters():
        p.data.normal_(0, 0.05)
    path = tmp_path / f"duf.{fmt}"
    if fmt == "pt":
        torch.save(m.state_dict(), path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    m2 = load_model("duf", weights=path, scale=3)
    assert (m2.variant, m2.uf) == ("16L", 3)
    x = torch.rand(1, 2, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), m2(x))


def test_any_scale_resamples_the_native_output(tmp_path):
    m = load_model("duf", weights=False, scale=2.5)
    assert m.uf == 3 and m.scale == 2.5
    x = torch.rand(1, 2, 3, 6, 5)
    with torch.no_grad():
        y = m(x)
    assert y.shape == (1, 2, 3, 15, 12) and m.output_size(6, 5) == (15, 12)
    assert load_model("duf-28l", weights=False, scale=2).uf == 4     # official 28L / 52L weights are x4 only


def test_wrong_files_raise_one_checkpoint_error(tmp_path):
    params = ref.random_params(16, 4, seed=2)
    good = tmp_path / "good.h5"
    write_official_h5(good, params)
    blob = good.read_bytes()
    trunc = tmp_path / "trunc.h5"
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model("duf", weights=trunc)
    empty = tmp_path / "nogroup.h5"
    with h5py.File(empty, "w") as f:
        f["weights"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="'params'"):
        load_model("duf", weights=empty)
    missing = tmp_path / "missing.h5"
    write_official_h5(missing, {k: v for k, v in params.items() if "fconv2" not in k})
    with pytest.raises(CheckpointError, match="missing 2 keys"):
        load_model("duf", weights=missing)
    odd = tmp_path / "odd.h5"
    write_official_h5(odd, {**params, "G/disc/W": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match="not DUF weights"):
        load_model("duf", weights=odd)
    notid = tmp_path / "notid.h5"
    write_official_h5(notid, params)
    with h5py.File(notid, "a") as f:
        f["params"]["G_filter__localexpand:0"][0, 0, 0, 0] = 2.0
    with pytest.raises(CheckpointError, match="identity"):
        load_model("duf", weights=notid)
    with pytest.raises(CheckpointError, match="DUF-16L weights, not DUF-28L"):
        load_model("duf", variant="28L", weights=good)
    bvsr = tmp_path / "bvsr.pth"
    torch.save(load_model("basicvsr", weights=False, num_feat=8, num_block=1).state_dict(), bvsr)
    with pytest.raises(CheckpointError, match="basicvsr checkpoint, not duf"):
        load_model("duf", weights=bvsr)
    duf_pt = tmp_path / "duf.pth"
    torch.save(DUF("16L", 4).state_dict(), duf_pt)
    with pytest.raises(CheckpointError, match="duf checkpoint, not basicvsr"):
        load_model("basicvsr", weights=duf_pt)


def test_weights_lookup_official_file_first(tmp_path, monkeypatch):
    """load_model('duf') takes the official params_16L_x4.h5 from the cache when it is there, else the bundled
    weights trained here, and says which ran."""
    from vsr_engine import weights as W
    home = tmp_path / "home"
    monkeypatch.setenv("VSR_ENGINE_HOME", str(home))
    m = load_model("duf")
    assert W.where("duf", "16L-x4")[0] == "bundled" and "trained here" in m.weights_layout
    assert (m.variant, m.uf) == ("16L", 4)
    os.makedirs(home / "weights")
    write_official_h5(home / "weights" / "params_16L_x4.h5", ref.random_params(16, 4, seed=5))
    m = load_model("duf-16l")
    assert m.weights_path.endswith("params_16L_x4.h5") and "official DUF-16L x4" in m.weights_layout
    with pytest.raises(W.WeightsError, match="not available offline"):
        load_model("duf", variant="52L")
