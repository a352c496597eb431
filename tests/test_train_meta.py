"""The basicvsr-meta head trainer on a tiny hand-made feature cache: held-out sources, the kept checkpoint."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vsr_engine.training.meta import _loss_parts, _y_psnr, main
from vsr_engine.models.resample import resample_x4


def _window(rng, clip, r, h=10, frames=4):
    s = int(np.floor(r * h))
    hr = torch.from_numpy(rng.integers(0, 256, (frames, s, s, 3), dtype=np.uint8))
    # a "backbone" x4 output near the HR, so the base is a meaningful starting point
    y4 = torch.nn.functional.interpolate(hr.permute(0, 3, 1, 2).float() / 255, size=(4 * h, 4 * h), mode="bilinear")
    return {"fused": torch.randn(frames, 64, h, h).half(), "y4": y4.half(), "hr": hr, "scale": r, "clip": clip,
            "lr_hw": (h, h)}


@pytest.fixture()
def cache(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "cache"
    d.mkdir()
    for k, (clip, r) in enumerate([("a", 1.5), ("a", 2.3), ("b", 3.1), ("b", 1.2), ("held", 2.0), ("held", 1.7)]):
        torch.save(_window(rng, clip, r), d / f"{k:05d}.pt")
    return d


def test_head_training_holds_out_whole_sources_and_never_writes_a_worse_head(cache, tmp_path, capsys):
    out = tmp_path / "head.safetensors"
    main(["train", "--cache", str(cache), "--val-clips", "held", "--steps", "6", "--lr", "3e-2", "--mid", "4",
          "--hidden", "8", "--val-every", "2", "--log-every", "2", "--out", str(out)])
    log = capsys.readouterr().out
    assert "4 training windows, 2 held out" in log
    from safetensors import safe_open
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert meta["val_clips"] == "held" and "held" not in meta["data"] and "a, b" in meta["data"]
    # the written head is the best one on the held-out windows: never below x4 + resize (step 0 = zero head)
    from vsr_engine import load_model
    m = load_model("basicvsr-meta", weights=str(out))
    gains = []
    for f in sorted(os.listdir(cache)):
        it = torch.load(cache / f, weights_only=False)
        if it["clip"] != "held":
            continue
        with torch.no_grad():
            o, hr = _loss_parts(m, it, slice(2, 4))
            b = resample_x4(it["y4"][2:4].float(), it["lr_hw"], it["scale"])[..., :hr.shape[-2], :hr.shape[-1]]
        gains.append(_y_psnr(o, hr) - _y_psnr(b, hr))
    assert float(np.mean(gains)) >= 0.0
    assert abs(float(np.mean(gains)) - float(meta["val_gain_db"])) < 0.02   # fp16 export vs fp32 at selection


def test_head_training_without_held_out_windows_is_one_clear_error(cache, tmp_path):
    with pytest.raises(SystemExit, match="held-out"):
        main(["train", "--cache", str(cache), "--val-clips", "nowhere", "--steps", "1",
              "--out", str(tmp_path / "h.safetensors")])


def test_distillation_arms_run_and_keep_only_a_better_student(cache, tmp_path, capsys):
    import json
    from vsr_engine.training import distill_meta
    head = tmp_path / "head.safetensors"
    main(["train", "--cache", str(cache), "--val-clips", "held", "--steps", "2", "--mid", "4", "--hidden", "8",
          "--out", str(head)])
    capsys.readouterr()
    out = tmp_path / "dsc.safetensors"
    distill_meta.main(["--arm", "distill", "--cache", str(cache), "--val-clips", "held", "--steps", "3",
                       "--val-every", "1", "--frames", "2", "--lr", "1e-3", "--head", str(head), "--out", str(out)])
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["arm"] == "distill" and rec["steps"] == 3
    assert rec["best"]["student"] >= rec["start"]["student"]
    assert out.exists() == (rec["best_step"] > 0)
    if out.exists():
        from vsr_engine import load_model
        assert load_model("dscvsr", weights=str(out), scale=2.0) is not None
