"""dyn_upsample: the reference against a loop transcription of the official TF code's index arithmetic, and every
implementation against the reference (forward and backward)."""
import pytest
import torch

from op_testing import (activate, check_against_ref, compile_check, forced, gpu, gpu_backends, impl_params,
                        needs_interpret)
from vsr_engine.ops import dyn_upsample, dyn_upsample_ref
from vsr_engine.ops.dyn_upsample import _dyn_upsample_bwd_op, _dyn_upsample_op


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


# ---- every implementation against the reference -------------------------------------------------------------
def impl_fn(impl):
    if impl == "triton":
        return forced(dyn_upsample, "triton")
    backend = "torch" if impl == "torch_op" else "cuda"
    return lambda x, f, res, r: _dyn_upsample_op(x, f, res, r, backend)


def check(impl, shape, dtype, what="", seed=0):
    n, c, r, h, w = shape
    fn = impl_fn(impl)
    check_against_ref(lambda x, f, res: fn(x, f, res, r), lambda x, f, res: dyn_upsample_ref(x, f, res, r),
                      list(inputs(n, c, r, h, w, seed=seed)), [0, 1, 2], dtype, what=what or f"{impl} {shape}")


# odd sizes, scale 2 / 3 / 4, a 1-pixel-wide frame, C = 1 and batch 2
SHAPES = [(1, 3, 4, 7, 9), (2, 3, 2, 5, 3), (1, 3, 3, 6, 11), (1, 1, 2, 1, 5), (1, 3, 4, 13, 1)]
IDS = ["n{}c{}r{}_{}x{}".format(*s) for s in SHAPES]


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_matches_reference(impl, dtype, shape, request):
    activate(impl, request)
    check(impl, shape, dtype)


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
def test_bf16_and_fp64(impl, request):
    activate(impl, request)
    check(impl, (1, 3, 4, 5, 6), torch.bfloat16)
    check(impl, (1, 3, 3, 4, 5), torch.float64)


@needs_interpret
def test_triton_more_channels_than_one_block():
    """C > 4: the public function runs the kernel on channel groups (same filters); f's gradient sums them."""
    check("triton", (1, 7, 2, 4, 5), torch.float32)


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
def test_partial_gradients_and_large_logits(impl, request):
    """Only some inputs need a gradient; logits in the hundreds (the max-subtracted softmax stays finite)."""
    activate(impl, request)
    x, f, res = inputs(1, 3, 2, 4, 5, seed=3, fscale=300.0)
    fn = impl_fn(impl)
    check_against_ref(lambda a, b, c: fn(a, b, c, 2), lambda a, b, c: dyn_upsample_ref(a, b, c, 2), [x, f, res],
                      [1], torch.float32, what=f"{impl} only f")
    check_against_ref(lambda a, b, c: fn(a, b, c, 2), lambda a, b, c: dyn_upsample_ref(a, b, c, 2), [x, f, res],
                      [0, 2], torch.float32, what=f"{impl} x and res")


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_opcheck(backend):
    x, f, res = (a.requires_grad_() for a in inputs(1, 3, 2, 3, 4))
    torch.library.opcheck(_dyn_upsample_op, (x, f, res, 2, backend))
    d = [a.detach() for a in (x, f, res)]
    torch.library.opcheck(_dyn_upsample_bwd_op, (torch.randn(1, 3, 6, 8), *d, 2, [True, True, True], backend))
    torch.library.opcheck(_dyn_upsample_bwd_op, (torch.randn(1, 3, 6, 8), *d, 2, [False, True, False], backend))


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
def test_gradcheck_fp64(impl, request):
    activate(impl, request)
    fn = impl_fn(impl)
    args = [a.double().requires_grad_() for a in inputs(1, 2, 2, 3, 4, seed=5)]
    # fast mode (random projections: a few calls, not one per logit -- 1200 interpreted launches otherwise); the
    # full Jacobian for the cheap torch implementation. check_against_ref compares every gradient element anyway.
    assert torch.autograd.gradcheck(lambda *a: fn(*a, 2), args, fast_mode=impl != "torch_op")


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_compile_fullgraph_with_backward(backend):
    compile_check(lambda *a: forced(dyn_upsample, backend)(*a, 3), lambda *a: dyn_upsample_ref(*a, 3),
                  inputs(1, 3, 3, 4, 5), [0, 1, 2])


@needs_interpret
def test_autocast_casts_inputs():
    """Under CPU bf16 autocast the kernel gets bf16 inputs (as the autocast convs produce) and returns bf16; the
    fp32 leaves still get fp32 gradients."""
    x, f, res = (a.requires_grad_() for a in inputs(1, 3, 2, 4, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = forced(dyn_upsample, "triton")(x, f, res, 2)
    assert out.dtype == torch.bfloat16
    want = dyn_upsample_ref(x.bfloat16().double(), f.bfloat16().double(), res.bfloat16().double(), 2)
    assert (out.double() - want).abs().max().item() < 0.05
    out.float().sum().backward()
    assert x.grad.dtype == f.grad.dtype == res.grad.dtype == torch.float32


def test_mixed_dtypes_and_empty():
    x, f, res = inputs(1, 3, 2, 4, 5)
    torch.testing.assert_close(dyn_upsample(x, f.double(), res.half(), 2),
                               dyn_upsample_ref(x, f.double(), res.half(), 2))
    assert dyn_upsample(*inputs(0, 3, 2, 4, 5), 2).shape == (0, 3, 8, 10)


# ---- GPU (skipped without CUDA) ----------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES + [(1, 3, 4, 180, 320), (2, 3, 2, 67, 45)], ids=str)
def test_gpu_matches_reference(backend, dtype, shape):
    n, c, r, h, w = shape
    fn = forced(dyn_upsample, backend)
    check_against_ref(lambda x, f, res: fn(x, f, res, r), lambda x, f, res: dyn_upsample_ref(x, f, res, r),
                      list(inputs(n, c, r, h, w, device="cuda")), [0, 1, 2], dtype, what=f"{backend} {shape}")


@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
def test_gpu_gradcheck_and_opcheck(backend):
    args = [a.double().requires_grad_() for a in inputs(1, 2, 2, 3, 4, seed=5, device="cuda")]
    assert torch.autograd.gradcheck(lambda *a: _dyn_upsample_op(*a, 2, backend), args)
    torch.library.opcheck(_dyn_upsample_op, (*args, 2, backend))
