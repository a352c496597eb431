"""The comparison rules of op_testing.check_against_ref can fail: an implementation that is the reference plus
1e-3 at one element of an output or of a gradient is rejected in fp32 at the 320-wide flow_warp shape where the
fp32 reference is least accurate (its own error there is ~1.2e-4); a NaN is rejected; in fp64 (reference error 0)
the old atol / rtol bound holds; in fp16, 12 ulps at one element are rejected. The unperturbed reference passes."""
import pytest
import torch

import test_flow_warp as tfw
from op_testing import FACTOR, assert_close_fp32, check_against_ref

SHAPE = (1, 4, 180, 320)  # the GPU failure's 180x320, 4 channels: CPU-cheap (torch only)


class _Bump(torch.autograd.Function):
    """Identity, plus ``out_eps`` at element 7 of the forward value and ``grad_eps`` at element 7 of the gradient."""

    @staticmethod
    def forward(ctx, t, out_eps, grad_eps):
        ctx.grad_eps = grad_eps
        y = t.clone()
        y.view(-1)[7] += out_eps
        return y

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g.view(-1)[7] += ctx.grad_eps
        return g, None, None


def warp_with(out_eps=0.0, grad_eps=0.0, nan=False):
    """flow_warp's torch reference with an error of out_eps in one output and grad_eps in one gradient of x."""
    def fn(x, flow):
        out = _Bump.apply(tfw.ref(_Bump.apply(x, 0.0, grad_eps), flow, "zeros"), out_eps, 0.0)
        if nan:
            out = out.clone()
            out.view(-1)[3] = float("nan")
        return out
    return fn


def check(fn, dtype=torch.float32, shape=SHAPE):
    x, flow = tfw.inputs(*shape)
    check_against_ref(fn, lambda a, b: tfw.ref(a, b, "zeros"), [x, flow], [0, 1], dtype, what="perturbed")


def test_reference_itself_passes():
    check(warp_with())
    check(warp_with(), torch.float16)
    check(warp_with(), torch.float64, shape=(1, 2, 7, 9))


def test_output_off_by_1e3_is_rejected():
    with pytest.raises(AssertionError, match=r"output 0: 1 / \d+ elements off; kernel error vs fp64 0\.00(1|099)"):
        check(warp_with(out_eps=1e-3))


def test_gradient_off_by_1e3_is_rejected():
    with pytest.raises(AssertionError, match=r"grad 0: 1 / \d+ elements off"):
        check(warp_with(grad_eps=1e-3))


def test_nan_is_rejected():
    with pytest.raises(AssertionError, match="output 0"):
        check(warp_with(nan=True))


def test_fp64_keeps_the_absolute_bound():
    """fp64: the torch reference is the fp64 reference (error 0), so only atol + rtol |ref| is left."""
    with pytest.raises(AssertionError, match="output 0"):
        check(warp_with(out_eps=1e-4), torch.float64, shape=(1, 2, 7, 9))


def test_fp16_rule_rejects_12_ulps():
    with pytest.raises(AssertionError, match="output 0: kernel error"):
        check(warp_with(out_eps=0.05), torch.float16)  # |out| <= ~4.3: ulp 0.004


def test_bound_is_factor_times_reference_error():
    """Directly: an error just under FACTOR x the reference's passes, just over fails; NaN matched by NaN passes."""
    r = torch.tensor([1.0, 2.0, float("nan")], dtype=torch.float64)
    t = (r + torch.tensor([1e-3, 0.0, 0.0], dtype=torch.float64)).float()  # the reference's own error: 1e-3
    under = (r + torch.tensor([0.0, 0.99e-3 * FACTOR, 0.0], dtype=torch.float64)).float()
    over = (r + torch.tensor([0.0, 1.01e-3 * FACTOR, 0.0], dtype=torch.float64)).float()
    assert_close_fp32(under, r, t)
    with pytest.raises(AssertionError, match=r"1 / 3 elements off.*own error vs fp64 0\.001"):
        assert_close_fp32(over, r, t)
