"""MATLAB-compatible bicubic imresize and Y-PSNR."""
import math

import numpy as np
import pytest

from vsr_engine.imresize import imresize
from vsr_engine.metrics import psnr, psnr_y, rgb_to_y, to_uint8


def slow_matlab_resize_1d(v, out_len, scale):
    """Straight from the definition, one output sample at a time (independent of the vectorised code)."""
    n = len(v)

    def k(x):
        a = abs(x)
        if a <= 1:
            return 1.5 * a ** 3 - 2.5 * a ** 2 + 1
        if a <= 2:
            return -0.5 * a ** 3 + 2.5 * a ** 2 - 4 * a + 2
        return 0.0

    def mirror(i):  # 0-based symmetric padding: ... 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...
        period = 2 * n
        i %= period
        return i if i < n else period - 1 - i

    out = []
    for u in range(out_len):
        x = (u + 0.5) / scale - 0.5  # centre in 0-based input coordinates
        if scale < 1:
            support = 2 / scale
            taps = range(math.floor(x - support) - 1, math.ceil(x + support) + 2)
            ws = [scale * k(scale * (x - j)) for j in taps]
        else:
            taps = range(math.floor(x) - 2, math.floor(x) + 4)
            ws = [k(x - j) for j in taps]
        s = sum(ws)
        out.append(sum(w * v[mirror(j)] for w, j in zip(ws, taps)) / s)
    return np.array(out)


@pytest.mark.parametrize("shape,scale", [((13, 17), 0.25), ((11, 7), 0.5), ((6, 9), 2.0), ((10, 10), 1 / 3),
                                         ((9, 12), 0.4), ((5, 5), 2.5)])
def test_matches_definition_float(shape, scale):
    rng = np.random.default_rng(1)
    img = rng.random(shape)
    oh, ow = math.ceil(shape[0] * scale - 1e-9), math.ceil(shape[1] * scale - 1e-9)
    ref = np.stack([slow_matlab_resize_1d(img[:, c], oh, scale) for c in range(shape[1])], axis=1)
    ref = np.stack([slow_matlab_resize_1d(ref[r, :], ow, scale) for r in range(oh)], axis=0)
    out = imresize(img, scale)
    assert out.shape == (oh, ow)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12)


def test_uint8_rounds_after_each_pass():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    out = imresize(img, 0.25)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    # height pass, round half away from zero, then width pass, round
    h = np.clip(np.floor(imresize(img.astype(np.float64), output_shape=(4, 20), scale=(0.25, 1.0)) + 0.5), 0, 255)
    w = np.clip(np.floor(imresize(h, output_shape=(4, 5), scale=(1.0, 0.25)) + 0.5), 0, 255)
    np.testing.assert_array_equal(out, w.astype(np.uint8))


def test_constant_stays_constant_and_sizes():
    img = np.full((37, 45, 3), 77, np.uint8)
    for s in (0.25, 0.5, 2, 1 / 3):
        out = imresize(img, s)
        assert out.shape[:2] == (math.ceil(37 * s - 1e-9), math.ceil(45 * s - 1e-9))
        assert (out == 77).all()
    with pytest.raises(ValueError):
        imresize(np.zeros((2, 2, 2, 2)), 0.5)


def test_y_channel_and_psnr():
    white = np.full((2, 2, 3), 255, np.uint8)
    black = np.zeros((2, 2, 3), np.uint8)
    np.testing.assert_allclose(rgb_to_y(white), 235.0, atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(black), 16.0)
    assert psnr(white, white) == float("inf")
    a = np.zeros((4, 4)); b = np.full((4, 4), 2.55)
    assert abs(psnr(a, b) - 40.0) < 1e-9
    # outputs are clamped and rounded to uint8 before Y
    f = np.full((2, 2, 3), 1.2)
    assert psnr_y(f, white) == float("inf")
    assert to_uint8(np.full((1, 1, 3), 0.5 / 255 + 1e-9)).item(0) == 1  # round(0.5 + eps) = 1
