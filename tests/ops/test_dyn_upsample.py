"""dyn_upsample: the reference against a loop transcription of the official TF code's index arithmetic, and every
implementation against the reference (forward and backward)."""
import pytest
import torch

from vsr_engine.ops import dyn_upsample, dyn_upsample_ref


def inputs(n, c, r, h, w, seed=0, device="cpu", fscale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, c, h, w, generator=g).to(device),
            (torch.randn(n, 25 * r * r, h, w, generator=g) * fscale).to(device),
            (torch.randn(n, c * r * r, h, w, generator=g) * 0.1).to(device))


def loop_ref(x, f, res, r):
    """The official TF graph, index by index, in NHWC as TF holds it (fp64):
    nets.py: F = softmax(reshape(f_nhwc, [.., 25, r*r]), dim=taps);
    utils.DynFilter3D: conv2d(x, eye(25) reshaped to (5, 5, 1, 25), 'SAME') -> x_local[.., t], t = dy*5 + dx,
    then x_local @ F -> [.., r*r]; tf.depth_to_space(t, r) per colour (1 channel);
    depth_to_space_3D(res) with 3 channels: out[h*r+i, w*r+j, c] = res[h, w, (i*r+j)*3 + c]."""
    n, c, h, w = x.shape
    xh = x.double().permute(0, 2, 3, 1)  # NHWC
    fh = f.double().permute(0, 2, 3, 1).reshape(n, h, w, 25, r * r)
    fh = torch.softmax(fh, dim=3)
    rh = res.double().permute(0, 2, 3, 1)
    out = torch.zeros(n, h * r, w * r, c, dtype=torch.float64)
    for b in range(n):
        for yy in range(h):
            for xx in range(w):
                loc = torch.zeros(25, c, dtype=torch.float64)
                for dy in range(5):
                    for dx in range(5):
                        sy, sx = yy + dy - 2, xx + dx - 2
                        if 0 <= sy < h and 0 <= sx < w:
                            loc[dy * 5 + dx] = xh[b, sy, sx]
                val = fh[b, yy, xx].t() @ loc  # (r*r, c)
                for i in range(r):
                    for j in range(r):
                        k = i * r + j
                        out[b, yy * r + i, xx * r + j] = val[k] + rh[b, yy, xx, k * c:(k + 1) * c]
    return out.permute(0, 3, 1, 2)


@pytest.mark.parametrize("shape", [(1, 3, 2, 5, 7), (2, 3, 3, 4, 3), (1, 3, 4, 3, 6), (1, 1, 2, 1, 2),
                                   (1, 2, 3, 6, 1)], ids=lambda s: "n{}c{}r{}_{}x{}".format(*s))
def test_reference_is_the_official_graph(shape):
    n, c, r, h, w = shape
    x, f, res = inputs(n, c, r, h, w, seed=sum(shape))
    want = loop_ref(x, f, res, r)
    torch.testing.assert_close(dyn_upsample_ref(x.double(), f.double(), res.double(), r), want, rtol=1e-12,
                               atol=1e-12)
    torch.testing.assert_close(dyn_upsample_ref(x, f, res, r), want.float(), rtol=1e-5, atol=1e-5)


def test_tf_order_is_not_torch_pixel_shuffle():
    """The residual's TF depth-to-space differs from F.pixel_shuffle for 3 channels (and agrees for 1)."""
    x, f, res = inputs(1, 3, 2, 3, 4)
    out = dyn_upsample_ref(torch.zeros_like(x), f, res, 2)
    assert not torch.allclose(out, torch.nn.functional.pixel_shuffle(res, 2))
    x1, f1, res1 = inputs(1, 1, 2, 3, 4)
    torch.testing.assert_close(dyn_upsample_ref(torch.zeros_like(x1), f1, res1, 2),
                               torch.nn.functional.pixel_shuffle(res1, 2))


def test_constant_frame_and_uniform_filter():
    """Softmax weights sum to one: a constant frame away from the border comes out constant (plus residual)."""
    x = torch.full((1, 3, 9, 9), 0.7)
    f = torch.randn(1, 25 * 9, 9, 9)
    out = dyn_upsample_ref(x, f, torch.zeros(1, 27, 9, 9), 3)
    torch.testing.assert_close(out[..., 6:-6, 6:-6], torch.full_like(out[..., 6:-6, 6:-6], 0.7))


def test_argument_checks():
    x, f, res = inputs(1, 3, 2, 4, 5)
    with pytest.raises(ValueError, match="f must be"):
        dyn_upsample(x, f[:, :99], res, 2)
    with pytest.raises(ValueError, match="res must be"):
        dyn_upsample(x, f, res[:, :6], 2)
    with pytest.raises(ValueError, match="scale"):
        dyn_upsample(x, f, res, 0)
    with pytest.raises(ValueError, match="f must be"):
        dyn_upsample(x, f, res, 3)
    with pytest.raises(TypeError, match="float"):
        dyn_upsample(x, f.long(), res, 2)
