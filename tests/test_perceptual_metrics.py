"""LPIPS and NIQE against the values pyiqa publishes for its calibration images (ResultsCalibra of
chaofengc/IQA-PyTorch: results_official.csv). Weights / parameters and images must be on this machine (converted
with ``python -m vsr_engine.lpips`` / ``python -m vsr_engine.niqe``; images in $VSR_ENGINE_HOME/iqa_calibration/
{ref,dist}/I03.bmp ...); otherwise these tests skip with the reason. Nothing is downloaded."""
from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest
import torch

# the user's cache, read only (conftest points VSR_ENGINE_HOME at a fresh folder for every test)
HOME = os.environ.get("VSR_ENGINE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vsr_engine")
CAL = os.environ.get("VSR_IQA_CALIBRATION", os.path.join(HOME, "iqa_calibration"))
LPIPS_W = os.path.join(HOME, "weights", "lpips_alex_v0.1.safetensors")
NIQE_P = os.path.join(HOME, "weights", "niqe_pris_params.npz")
NAMES = ["I03", "I04", "I06", "I08", "I19"]
# pyiqa ResultsCalibra/results_official.csv (official implementations)
LPIPS_OFFICIAL = [0.7237, 0.2572, 0.05079, 0.05205, 0.4253]
NIQE_OFFICIAL = [15.7536293917814, 3.65492152353770, 3.23547743716998, 3.18403333858339, 8.63519663862637]
torch.set_num_threads(1)


def _img(kind, n):
    from PIL import Image
    p = os.path.join(CAL, kind, f"{n}.bmp")
    if not os.path.isfile(p):
        pytest.skip(f"calibration image {p} not present (copy IQA-PyTorch's ResultsCalibra/{{ref,dist}}_dir there)")
    return np.asarray(Image.open(p).convert("RGB"))


def test_lpips_matches_published_values():
    if not os.path.isfile(LPIPS_W):
        pytest.skip(f"LPIPS weights not converted ({LPIPS_W}): python -m vsr_engine.lpips")
    from vsr_engine.lpips import WEIGHTS_SHA256, content_sha256
    from vsr_engine.metrics import lpips
    assert content_sha256(LPIPS_W) == WEIGHTS_SHA256
    got = [lpips(_img("dist", n), _img("ref", n), weights=LPIPS_W) for n in NAMES]
    assert np.allclose(got, LPIPS_OFFICIAL, atol=1.5e-4), got
    assert lpips(_img("ref", "I03"), _img("ref", "I03"), weights=LPIPS_W) == 0.0


def test_lpips_weights_digest_is_blind_to_header_order(tmp_path):
    # safetensors 0.8.0 writes metadata keys in a varying order, so a file digest of the converted weights was not
    # reproducible (a fresh conversion was refused about half the time); the digest is over the tensors
    from safetensors.torch import save_file
    from vsr_engine.lpips import content_sha256
    sd = {"b.weight": torch.arange(6.0).view(2, 3), "a.bias": torch.ones(2)}
    save_file(sd, str(tmp_path / "x.safetensors"), metadata={"sdist_sha256": "1", "source": "2"})
    save_file(dict(reversed(list(sd.items()))), str(tmp_path / "y.safetensors"), metadata={"source": "2"})
    assert content_sha256(str(tmp_path / "x.safetensors")) == content_sha256(str(tmp_path / "y.safetensors"))
    sd["a.bias"] = torch.ones(2) * 1.5
    save_file(sd, str(tmp_path / "z.safetensors"))
    assert content_sha256(str(tmp_path / "z.safetensors")) != content_sha256(str(tmp_path / "x.safetensors"))


def test_lpips_checkpoint_reader_refuses_code():
    from vsr_engine.lpips import _NumpyOnly

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refused"):
        _NumpyOnly(io.BytesIO(pickle.dumps({"a": Evil()}))).load()
    arrays = _NumpyOnly(io.BytesIO(pickle.dumps({"k": np.arange(3.0)}))).load()
    assert arrays["k"].tolist() == [0.0, 1.0, 2.0]


def test_lpips_missing_weights_is_one_clear_error(tmp_path):
    from vsr_engine.checkpoint import CheckpointError
    from vsr_engine.lpips import LPIPS
    with pytest.raises(CheckpointError, match="python -m vsr_engine.lpips"):
        LPIPS(weights=str(tmp_path / "none.safetensors"))


def test_niqe_near_published_matlab_values():
    """Within 5 % of the official MATLAB NIQE on pyiqa's calibration images (measured: 15.593 3.655 3.225 3.210
    9.025 vs 15.754 3.655 3.235 3.184 8.635; pyiqa's own port is 5.1 % off on I19)."""
    if not os.path.isfile(NIQE_P):
        pytest.skip(f"NIQE parameters not prepared ({NIQE_P}): python -m vsr_engine.niqe")
    from vsr_engine.metrics import niqe
    got = [niqe(_img("dist", n), params=NIQE_P) for n in NAMES]
    assert np.allclose(got, NIQE_OFFICIAL, rtol=0.05), got
    assert abs(got[1] - NIQE_OFFICIAL[1]) < 0.01 and abs(got[2] - NIQE_OFFICIAL[2]) < 0.02


def test_niqe_refuses_tiny_images_and_missing_params(tmp_path):
    from vsr_engine.checkpoint import CheckpointError
    from vsr_engine.niqe import niqe
    with pytest.raises(CheckpointError, match="python -m vsr_engine.niqe"):
        niqe(np.zeros((100, 100, 3), np.uint8), params=str(tmp_path / "none.npz"))
    if os.path.isfile(NIQE_P):
        with pytest.raises(ValueError, match="96x96"):
            niqe(np.zeros((50, 200, 3), np.uint8), params=NIQE_P)


def test_eval_cli_paired_and_no_reference(tmp_path, monkeypatch, capsys):
    """``vsr-engine eval --metrics psnr,lpips,niqe`` (GT folder) and ``--no-reference`` (real LR frames)."""
    if not (os.path.isfile(LPIPS_W) and os.path.isfile(NIQE_P)):
        pytest.skip("LPIPS weights / NIQE parameters not prepared in the user's cache")
    from PIL import Image
    data = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
    walk = os.path.join(data, "vid4_gt", "walk")
    if not os.path.isdir(walk):
        pytest.skip("shared Vid4 walk frames not present")
    gt = tmp_path / "gt"
    gt.mkdir()
    for i in range(2):
        Image.open(os.path.join(walk, f"{i:08d}.png")).crop((200, 100, 392, 196)).save(gt / f"{i:08d}.png")
    monkeypatch.setenv("VSR_ENGINE_HOME", HOME)   # read the prepared files (nothing is written or downloaded)
    from vsr_engine import cli
    from vsr_engine.models import load_model  # noqa: F401
    torch.manual_seed(0)
    assert cli.main(["eval", str(gt), "--model", "basicvsr", "--metrics", "psnr,lpips,niqe"]) == 0
    line = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith("gt:")][0]
    assert "dB, LPIPS 0." in line and "NIQE " in line
    assert cli.main(["eval", str(gt), "--no-reference", "--metrics", "lpips"]) == 2
    assert "only niqe" in capsys.readouterr().err
    assert cli.main(["eval", str(gt), "--metrics", "psnr,brisque"]) == 2
