"""dwpw_conv2d: fused depthwise + pointwise conv (+ activation, + residual); every implementation vs the
reference conv2d(conv2d(x, dw, groups=C), pw); backward for the input, both weights, both biases, the residual."""
import pytest
import torch

from op_testing import (activate, check_against_ref, compile_check, forced, gpu,
                        gpu_backends, impl_params, needs_interpret)
from vsr_engine.ops import dwpw_conv2d, dwpw_conv2d_ref
from vsr_engine.ops.dwpw_conv2d import ACTS, _dwpw_bwd_op, _dwpw_op


def impl_fn(impl):
    if impl == "triton":
        return forced(dwpw_conv2d, "triton")
    backend = "torch" if impl == "torch_op" else "cuda"
    return lambda x, dww, dwb, pww, pwb, act=None, res=None: _dwpw_op(x, dww, dwb, pww, pwb, res, ACTS[act], backend)


def inputs(n, c, o, h, w, k=3, seed=0, device="cpu", bias=True, residual=True):
    g = torch.Generator().manual_seed(seed)
    t = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    return [t(n, c, h, w), t(c, 1, k, k) * 0.5, t(c) if bias else None, t(o, c, 1, 1) / c ** 0.5,
            t(o) if bias else None, t(n, o, h, w) if residual else None]


def check(impl, args, act, dtype, what):
    fn = impl_fn(impl)
    idx = [i for i, a in enumerate(args) if a is not None]  # gradients for every tensor input
    check_against_ref(lambda *a: fn(*a[:5], act, a[5]), lambda *a: dwpw_conv2d_ref(*a[:5], act, a[5]),
                      args, idx, dtype, what=what, rtol=2e-5, atol=2e-5)


SHAPES = [(1, 2, 3, 7, 9), (1, 3, 5, 13, 11), (1, 64, 64, 7, 9)]


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "n{}c{}o{}_{}x{}".format(*s))
def test_matches_reference(impl, dtype, shape, request):
    activate(impl, request)
    check(impl, inputs(*shape), "lrelu", dtype, f"{impl} {shape}")


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
@pytest.mark.parametrize("act,k,bias,residual", [(None, 3, False, False), ("relu", 5, True, False),
                                                  ("relu", 1, True, True)])
def test_variants(impl, act, k, bias, residual, request):
    """Activations, kernel sizes, without biases / residual; N = 2; C = 40 spans two channel blocks."""
    activate(impl, request)
    check(impl, inputs(2, 40, 6, 4, 5, k=k, bias=bias, residual=residual), act, torch.float32, f"{impl} {act} k{k}")


@pytest.mark.parametrize("interpret", [False, True], ids=["gpu", "interpreter"])
def test_launch_rule_dot_only_with_blocks_of_16(interpret):
    """tl.dot only where every block dimension is >= 16 (triton 3.6 rejects K < 16 at compile time, the interpreter
    never checks), for every C, O <= 130 and pixel counts 1..2**20: few channels are padded to 16; fp64 takes the
    broadcast-sum path."""
    from vsr_engine.ops._util import DOT_MIN
    from vsr_engine.ops.dwpw_conv2d import _fwd_config
    seen = set()
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for c in range(1, 131):
            for o in range(1, 131):
                for hw in (1, 15, 16, 17, 1000, 1 << 20):
                    cfg = _fwd_config(c, o, hw, dtype, interpret=interpret)
                    seen.add(cfg)
                    assert cfg.dot == 0 or min(cfg.block_c, cfg.block_o, cfg.block_p) >= DOT_MIN, (c, o, hw, cfg)
                    assert (cfg.dot == 0) == (dtype == torch.float64), (c, o, hw, dtype, cfg)
    assert {cfg.dot for cfg in seen} == ({0, 1} if interpret else {0, 1, 2})


def test_argument_checks():
    x, dww, dwb, pww, pwb, res = inputs(1, 4, 3, 5, 5)
    with pytest.raises(ValueError, match="k odd"):
        dwpw_conv2d(x, torch.randn(4, 1, 2, 2), dwb, pww, pwb)
    with pytest.raises(ValueError, match="pw_weight"):
        dwpw_conv2d(x, dww, dwb, torch.randn(3, 5, 1, 1), pwb)
    with pytest.raises(ValueError, match="activation"):
        dwpw_conv2d(x, dww, dwb, pww, pwb, activation="gelu")
    # pw_weight may also be given as (O, C)
    torch.testing.assert_close(dwpw_conv2d(x, dww, dwb, pww.view(3, 4), pwb), dwpw_conv2d_ref(x, dww, dwb, pww, pwb))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_opcheck(backend):
    args = [a.requires_grad_() for a in inputs(1, 3, 4, 4, 5)]
    x, dww, dwb, pww, pwb, res = args
    torch.library.opcheck(_dwpw_op, (x, dww, dwb, pww, pwb, res, 2, backend))
    torch.library.opcheck(_dwpw_op, (x, dww, None, pww, None, None, 1, backend))
    d = [a.detach() for a in args]
    torch.library.opcheck(_dwpw_bwd_op, (torch.randn(1, 4, 4, 5), *d[:5], 2, [True, True, True, True, True], backend))
    torch.library.opcheck(_dwpw_bwd_op, (torch.randn(1, 4, 4, 5), *d[:5], 0, [True, False, False, True, False],
                                         backend))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_gradcheck_fp64(backend):
    args = [a.double().requires_grad_() for a in inputs(1, 2, 2, 2, 3, seed=4)]
    assert torch.autograd.gradcheck(lambda *a: _dwpw_op(*a, 2, backend), args)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_compile_fullgraph_with_backward(backend):
    args = inputs(1, 3, 4, 5, 6)
    compile_check(lambda *a: forced(dwpw_conv2d, backend)(*a[:5], "lrelu", a[5]),
                  lambda *a: dwpw_conv2d_ref(*a[:5], "lrelu", a[5]), args, list(range(6)))


# ---- GPU (skipped without CUDA) ----------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES + [(1, 64, 64, 180, 320), (1, 512, 64, 60, 80)], ids=str)
def test_gpu_matches_reference(backend, dtype, shape):
    fn = forced(dwpw_conv2d, backend)
    args = inputs(*shape, device="cuda")
    idx = list(range(6))
    check_against_ref(lambda *a: fn(*a[:5], "lrelu", a[5]), lambda *a: dwpw_conv2d_ref(*a[:5], "lrelu", a[5]),
                      args, idx, dtype, what=backend, rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
def test_gpu_gradcheck_and_opcheck(backend):
    args = [a.double().requires_grad_() for a in inputs(1, 2, 3, 3, 4, seed=4, device="cuda")]
    assert torch.autograd.gradcheck(lambda *a: _dwpw_op(*a, 2, backend), args)
    torch.library.opcheck(_dwpw_op, (*args, 2, backend))
