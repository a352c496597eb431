"""vsr-engine compare: the grid's layout and pixels, the per-frame plot, one-line errors."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from vsr_engine import cli
from vsr_engine.compare import make_grid, per_frame  # noqa: E402
from vsr_engine.imresize import imresize


def _folder(d, imgs):
    d.mkdir()
    for i, f in enumerate(imgs):
        Image.fromarray(f).save(d / f"{i:04d}.png")
    return str(d)


@pytest.fixture
def clip(tmp_path):
    rng = np.random.default_rng(0)
    lr = [rng.integers(0, 255, (12, 16, 3), dtype=np.uint8) for _ in range(3)]
    out = [imresize(f, 4) for f in lr]          # a "model" equal to bicubic: its column must equal bicubic's
    return tmp_path, lr, out


def test_grid_columns_are_nearest_bicubic_model_gt(clip):
    _, lr, out = clip
    g = make_grid(lr, out, [1], gt_frames=out, crop=(8, 16, 20, 24), pad=4)
    assert g.shape == (24, 4 * 20 + 3 * 4, 3)
    near = np.repeat(np.repeat(lr[1], 4, 0), 4, 1)[16:40, 8:28]
    col = lambda k: g[:, k * 24:k * 24 + 20]   # noqa: E731
    assert (col(0)[13:] == near[13:]).all()                 # below the label
    assert (col(1)[13:] == out[1][16:40, 8:28][13:]).all()  # bicubic == this model
    assert (col(2)[13:] == col(1)[13:]).all() and (col(3)[13:] == col(2)[13:]).all()


def test_cli_compare_writes_grid_and_plot(clip, capsys):
    tmp, lr, out = clip
    a, b = _folder(tmp / "lr", lr), _folder(tmp / "out", out)
    assert cli.main(["compare", a, b, "--frames", "0,2", "--gt", b, "--prefix", str(tmp / "r" / "cmp"),
                     "--no-plot"]) == 0
    g = np.asarray(Image.open(tmp / "r" / "cmp_grid.png"))
    assert g.shape == (2 * 48 + 4, 4 * 64 + 3 * 4, 3)
    pytest.importorskip("matplotlib", reason="matplotlib (optional) not installed")
    v = per_frame(lr, out, out, metrics=["psnr"])
    assert v["psnr"]["model"] == [float("inf")] * 3
    from vsr_engine.compare import make_plot
    p = make_plot(v, str(tmp / "plot" / "p.png"))
    assert Image.open(p).size[0] > 100
    # without GT the plot is NIQE: its parameters are not in the test's empty cache -> one clear line
    assert cli.main(["compare", a, b, "--prefix", str(tmp / "p"), "--frames", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python -m vsr_engine.niqe" in err[0]


def test_cli_compare_errors(clip, capsys):
    tmp, lr, out = clip
    a, b = _folder(tmp / "lr", lr), _folder(tmp / "out", out[:2])
    assert cli.main(["compare", a, b]) == 2
    assert "frame counts differ" in capsys.readouterr().err
    b = _folder(tmp / "out3", out)
    assert cli.main(["compare", a, b, "--frames", "7"]) == 2
    assert "outside" in capsys.readouterr().err
    assert cli.main(["compare", a, b, "--crop", "1,2,3"]) == 2
    assert "4 numbers" in capsys.readouterr().err
