"""pixel_shuffle / pixel_shuffle_lrelu: every implementation equals the reference (forward and backward)."""
import pytest
import torch
import torch.nn.functional as F

from op_testing import (activate, check_against_ref, compile_check, forced, gpu,
                        gpu_backends, impl_params, needs_interpret)
from vsr_engine.ops import pixel_shuffle, pixel_shuffle_lrelu, pixel_shuffle_lrelu_ref, pixel_shuffle_ref
from vsr_engine.ops.pixel_shuffle import _pixel_shuffle_bwd_op, _pixel_shuffle_op


def impl_fn(impl, fused):
    if impl == "triton":
        return forced(pixel_shuffle_lrelu if fused else pixel_shuffle, "triton")
    backend = "torch" if impl == "torch_op" else "cuda"
    if fused:
        return lambda x, r, b: _pixel_shuffle_op(x, r, b, True, 0.1, backend)
    return lambda x, r: _pixel_shuffle_op(x, r, None, False, 1.0, backend)


def inputs(n, c, r, h, w, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, c * r * r, h, w, generator=g).to(device),
            torch.randn(c * r * r, generator=g).to(device))


SHAPES = [(1, 2, 2, 7, 9), (1, 3, 3, 5, 7), (1, 64, 2, 5, 7), (2, 3, 2, 1, 3)]


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("fused", [False, True], ids=["plain", "bias_lrelu"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}r{}_{}x{}".format(*s))
def test_matches_reference(impl, dtype, fused, shape, request):
    activate(impl, request)
    x, b = inputs(*shape)
    r = shape[2]
    fn = impl_fn(impl, fused)
    if fused:
        check_against_ref(lambda a, bb: fn(a, r, bb), lambda a, bb: pixel_shuffle_lrelu_ref(a, r, bb), [x, b],
                          [0, 1], dtype, what=f"{impl} fused")
    else:
        check_against_ref(lambda a: fn(a, r), lambda a: pixel_shuffle_ref(a, r), [x], [0], dtype, what=impl)


@needs_interpret
def test_lrelu_without_bias_leading_dims_and_slope():
    x, _ = inputs(1, 3, 2, 4, 5)
    x5 = x.view(1, 1, 12, 4, 5).expand(2, 3, 12, 4, 5)  # (*, C r^2, H, W) with leading dims, non-contiguous
    fn = forced(pixel_shuffle_lrelu, "triton")
    torch.testing.assert_close(fn(x5, 2), F.leaky_relu(F.pixel_shuffle(x5, 2), 0.1))
    torch.testing.assert_close(fn(x, 2, None, 0.2), F.leaky_relu(F.pixel_shuffle(x, 2), 0.2))
    torch.testing.assert_close(forced(pixel_shuffle, "triton")(x5, 2), F.pixel_shuffle(x5, 2))


def test_bad_shapes():
    with pytest.raises(ValueError, match="not divisible"):
        pixel_shuffle(torch.randn(1, 6, 2, 2), 2)
    with pytest.raises(ValueError, match="bias"):
        pixel_shuffle_lrelu(torch.randn(1, 8, 2, 2), 2, torch.randn(3))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_opcheck(backend):
    x, b = inputs(1, 3, 2, 3, 4)
    x.requires_grad_(True)
    b.requires_grad_(True)
    torch.library.opcheck(_pixel_shuffle_op, (x, 2, b, True, 0.1, backend))
    torch.library.opcheck(_pixel_shuffle_op, (x, 2, None, False, 1.0, backend))
    g = torch.randn(1, 3, 6, 8)
    torch.library.opcheck(_pixel_shuffle_bwd_op, (g, x.detach(), 2, b.detach(), True, 0.1, True, backend))
    torch.library.opcheck(_pixel_shuffle_bwd_op, (g, None, 2, None, False, 1.0, False, backend))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_gradcheck_fp64(backend):
    x, b = inputs(1, 1, 2, 2, 3, seed=3)
    x, b = x.double().requires_grad_(), b.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, bb: _pixel_shuffle_op(a, 2, bb, True, 0.1, backend), (x, b))
    assert torch.autograd.gradcheck(lambda a: _pixel_shuffle_op(a, 2, None, False, 1.0, backend), (x,))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_compile_fullgraph_with_backward(backend):
    x, b = inputs(1, 3, 2, 4, 5)
    compile_check(lambda a, bb: forced(pixel_shuffle_lrelu, backend)(a, 2, bb),
                  lambda a, bb: pixel_shuffle_lrelu_ref(a, 2, bb), [x, b], [0, 1])


# ---- GPU (skipped without CUDA) ----------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES + [(1, 64, 2, 180, 320), (1, 64, 2, 360, 640)], ids=str)
def test_gpu_matches_reference(backend, dtype, shape):
    x, b = inputs(*shape, device="cuda")
    r = shape[2]
    check_against_ref(lambda a, bb: forced(pixel_shuffle_lrelu, backend)(a, r, bb),
                      lambda a, bb: pixel_shuffle_lrelu_ref(a, r, bb), [x, b], [0, 1], dtype, what=backend)
    check_against_ref(lambda a: forced(pixel_shuffle, backend)(a, r), lambda a: pixel_shuffle_ref(a, r), [x], [0],
                      dtype, what=backend)


@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
def test_gpu_gradcheck_and_opcheck(backend):
    x, b = inputs(1, 2, 2, 2, 3, seed=3, device="cuda")
    x, b = x.double().requires_grad_(), b.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, bb: _pixel_shuffle_op(a, 2, bb, True, 0.1, backend), (x, b))
    torch.library.opcheck(_pixel_shuffle_op, (x, 2, b, True, 0.1, backend))
