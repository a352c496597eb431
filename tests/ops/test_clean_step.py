"""clean_step: fused x + residue and mean|residue| (a 0-d device tensor); every implementation vs the reference."""
import pytest
import torch

from op_testing import (activate, check_against_ref, compile_check, forced, gpu,
                        gpu_backends, impl_params, needs_interpret)
from vsr_engine.ops import clean_step, clean_step_ref
from vsr_engine.ops.clean_step import _clean_step_bwd_op, _clean_step_op

IMPLS = {
    "triton": forced(clean_step, "triton"),
    "torch_op": lambda x, r: _clean_step_op(x, r, "torch"),
    "cuda_emu": lambda x, r: _clean_step_op(x, r, "cuda"),
}


def inputs(shape, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g).to(device), (torch.randn(*shape, generator=g) * 0.1).to(device)


SHAPES = [(1, 3, 7, 9), (3, 2, 13, 17), (1, 64, 11, 13), (5, 3, 1, 1)]


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(impl, dtype, shape, request):
    activate(impl, request)
    x, r = inputs(shape)
    check_against_ref(IMPLS[impl], clean_step_ref, [x, r], [0, 1], dtype, what=impl)
    out, mean = IMPLS[impl](x.to(dtype), r.to(dtype))
    assert mean.dim() == 0 and mean.dtype == torch.float32 and mean.device == x.device


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
def test_mean_is_exact_enough_for_the_threshold(impl, request):
    """The window mean decides the loop (tests/test_models.py: 0.3 vs threshold 0.3); the fp64-accumulated mean
    rounds to the same fp32 value as the exact mean."""
    activate(impl, request)
    r = torch.cat([torch.full((1, 3, 8, 8), -0.1), torch.full((1, 3, 8, 8), -0.5)])
    x = torch.zeros_like(r)
    _, mean = IMPLS[impl](x, r)
    exact = r.double().abs().mean().float()
    assert mean.item() == exact.item()
    assert not bool(mean < 0.3)


@needs_interpret
def test_empty_and_sign_of_zero():
    x = torch.zeros(1, 3, 2, 2, requires_grad=True)
    r = torch.tensor([0.0, 1.0, -2.0] * 4).view(1, 3, 2, 2).requires_grad_(True)
    out, mean = forced(clean_step, "triton")(x, r)
    mean.backward()
    torch.testing.assert_close(r.grad, torch.sign(r.detach()) / r.numel())  # d|r|/dr = 0 at r = 0, like torch
    with pytest.raises(ValueError, match="shapes differ"):
        clean_step(x, r[:, :2])


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_opcheck(backend):
    x, r = inputs((2, 3, 4, 5))
    torch.library.opcheck(_clean_step_op, (x.requires_grad_(), r.requires_grad_(), backend))
    torch.library.opcheck(_clean_step_bwd_op, (torch.randn(2, 3, 4, 5), torch.tensor(0.5), r.detach(), backend))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_gradcheck_fp64(backend):
    x, r = inputs((1, 2, 3, 4), seed=2)
    x, r = x.double().requires_grad_(), r.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _clean_step_op(a, b, backend), (x, r))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_compile_fullgraph_with_backward(backend):
    x, r = inputs((2, 3, 5, 6))
    compile_check(forced(clean_step, backend), clean_step_ref, [x, r], [0, 1])


# ---- GPU (skipped without CUDA) ----------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES + [(15, 3, 180, 320), (15, 3, 540, 960)], ids=str)
def test_gpu_matches_reference(backend, dtype, shape):
    x, r = inputs(shape, device="cuda")
    check_against_ref(forced(clean_step, backend), clean_step_ref, [x, r], [0, 1], dtype, what=backend)


@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
def test_gpu_gradcheck_opcheck_and_no_sync(backend):
    x, r = inputs((1, 2, 3, 4), seed=2, device="cuda")
    x, r = x.double().requires_grad_(), r.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _clean_step_op(a, b, backend), (x, r))
    torch.library.opcheck(_clean_step_op, (x, r, backend))
    xs, rs = inputs((4, 3, 64, 64), device="cuda")
    torch.cuda.set_sync_debug_mode("error")  # a host synchronisation inside the op would raise
    try:
        forced(clean_step, backend)(xs, rs)
    finally:
        torch.cuda.set_sync_debug_mode("default")
