"""bench/eval_adapt.py score: mean Y-PSNR / LPIPS over frames, and one error line when the LPIPS weights are
missing. The LPIPS figures need the converted weights in the user's cache (read only; ``python -m vsr_engine.lpips``),
else that test skips. Nothing is downloaded."""
import importlib.util
import os

import numpy as np
import pytest
import torch

from vsr_engine.metrics import lpips, psnr_y

HOME = os.environ.get("VSR_ENGINE_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "vsr_engine")
LPIPS_W = os.path.join(HOME, "weights", "lpips_alex_v0.1.safetensors")
torch.set_num_threads(1)


def _eval_adapt():
    p = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "eval_adapt.py")
    spec = importlib.util.spec_from_file_location("eval_adapt", p)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_score_without_lpips_weights_is_one_error_line(tmp_path):
    # conftest points VSR_ENGINE_HOME at an empty folder: no weights, and the check comes before any data is read
    with pytest.raises(SystemExit) as e:
        _eval_adapt().score(str(tmp_path / "absent"), [])
    msg = str(e.value)
    assert "\n" not in msg and "LPIPS weights not found" in msg and "python -m vsr_engine.lpips" in msg


def test_frame_metrics_are_per_frame_means():
    if not os.path.isfile(LPIPS_W):
        pytest.skip(f"LPIPS weights not converted ({LPIPS_W}): python -m vsr_engine.lpips")
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    sigma = np.array([8.0, 30.0])[:, None, None, None]   # frame 1 noisier than frame 0
    noisy = np.clip(gt + rng.normal(0, 1, gt.shape) * sigma, 0, 255)
    sr = [torch.from_numpy(f / 255.0).permute(2, 0, 1).float() for f in noisy]   # float CHW, as the model gives
    r = _eval_adapt().frame_metrics(sr, gt, weights=LPIPS_W)
    u8 = np.round(noisy).astype(np.uint8)
    per = [lpips(u8[i], gt[i], weights=LPIPS_W) for i in range(2)]
    assert r["frames"] == 2 and per[0] < per[1]
    assert r["psnr_y"] == pytest.approx(np.mean([psnr_y(u8[i], gt[i]) for i in range(2)]), abs=1e-9)
    assert r["lpips"] == pytest.approx(np.mean(per), abs=1e-6)
    assert _eval_adapt().frame_metrics(list(gt), gt, weights=LPIPS_W)["lpips"] == 0.0
    assert _eval_adapt().frame_metrics(sr, gt, with_lpips=False)["lpips"] is None
