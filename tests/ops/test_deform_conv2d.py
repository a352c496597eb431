"""deform_conv2d: the reference equals torchvision (committed fixtures), every implementation equals the reference
(forward and every gradient), custom-op checks."""
import os

import pytest
import torch

from op_testing import (activate, check_against_ref, compile_check, forced, gpu, gpu_backends, impl_params,
                        needs_interpret)
from vsr_engine.ops import deform_conv2d, deform_conv2d_ref
from vsr_engine.ops.deform_conv2d import _deform_bwd_op, _deform_op

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "deform_conv2d_torchvision.pt")
NAMES = ("input", "offset", "weight", "bias", "mask")


def impl_fn(impl, s, p, d):
    if impl == "triton":
        return lambda x, off, w, b, m: forced(deform_conv2d, "triton")(x, off, w, b, s, p, d, m)
    backend = {"torch_op": "torch", "cuda_emu": "cuda"}[impl]
    return lambda x, off, w, b, m: _deform_op(x, off, w, b, m, list(s), list(p), list(d), backend)


def inputs(n, cin, cout, h, w, k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), dg=1, groups=1, mask=True, bias=True,
           scale=3.0, seed=0, device="cpu"):
    """Random operands; offsets ~ N(0, scale) px, so many samples fall partly or wholly outside the image."""
    g = torch.Generator().manual_seed(seed)
    kh, kw = k
    ho = (h + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    wo = (w + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    x = torch.randn(n, cin, h, w, generator=g)
    off = torch.randn(n, 2 * dg * kh * kw, ho, wo, generator=g) * scale
    wt = torch.randn(cout, cin // groups, kh, kw, generator=g) / (cin * kh * kw) ** 0.5
    b = torch.randn(cout, generator=g) if bias else None
    m = torch.rand(n, dg * kh * kw, ho, wo, generator=g) if mask else None
    return [t.to(device) if t is not None else None for t in (x, off, wt, b, m)]


# (n, cin, cout, h, w, k, stride, padding, dilation, deformable groups, conv groups, mask)
SHAPES = [
    (1, 4, 5, 6, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False),
    (2, 16, 8, 5, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, 1, True),
    (1, 6, 4, 7, 5, (3, 2), (2, 1), (1, 0), (1, 2), 3, 2, True),
    (1, 64, 64, 4, 5, (3, 3), (1, 1), (1, 1), (1, 1), 8, 1, False),  # TDAN's alignment: 8 groups of 8 channels
]


def _grad_idx(args):
    return [i for i, a in enumerate(args) if a is not None]


def _fixtures():
    return torch.load(FIXTURES, weights_only=True)["cases"]


def test_reference_equals_torchvision():
    """deform_conv2d_ref against torchvision.ops.deform_conv2d (CPU kernel, fp64, scripts/make_deform_fixtures.py):
    output and the gradients of input, offset, weight, bias, mask."""
    for k, c in enumerate(_fixtures()):
        leaves = {n: (c[n].clone().requires_grad_() if c[n] is not None else None) for n in NAMES}
        out = deform_conv2d_ref(leaves["input"], leaves["offset"], leaves["weight"], leaves["bias"], c["stride"],
                                c["padding"], c["dilation"], leaves["mask"])
        torch.testing.assert_close(out, c["out"], rtol=1e-12, atol=1e-12, msg=lambda m: f"case {k}: {m}")
        out.backward(c["grad_out"])
        for n in NAMES:
            if c[n] is not None:
                torch.testing.assert_close(leaves[n].grad, c["grad_" + n], rtol=1e-12, atol=1e-12,
                                           msg=lambda m: f"case {k} grad {n}: {m}")


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
def test_equals_torchvision(impl, request):
    """Each implementation in fp64 on torchvision's cases: output and every gradient to 1e-10."""
    activate(impl, request)
    for k, c in enumerate(_fixtures()):
        fn = impl_fn(impl, c["stride"], c["padding"], c["dilation"])
        leaves = [c[n].clone().requires_grad_() if c[n] is not None else None for n in NAMES]
        out = fn(*leaves)
        torch.testing.assert_close(out, c["out"], rtol=1e-10, atol=1e-10, msg=lambda m: f"case {k}: {m}")
        out.backward(c["grad_out"])
        for n, t in zip(NAMES, leaves):
            if t is not None:
                torch.testing.assert_close(t.grad, c["grad_" + n], rtol=1e-10, atol=1e-10,
                                           msg=lambda m: f"case {k} grad {n}: {m}")


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[1]}to{s[2]}_k{s[5][0]}{s[5][1]}_s{s[6][0]}_dg{s[9]}_g{s[10]}")
def test_matches_reference(impl, dtype, shape, request):
    """The project's rule (tests/ops/op_testing.py): fp32 within max(2 x torch fp32's own error, 1e-5 + 1e-5 |ref|)
    of the fp64 reference; 16-bit within 2 x torch's 16-bit error + 1 ulp. Output and all five gradients."""
    if dtype != torch.float32 and shape is not SHAPES[1] and impl != "cuda_emu":
        pytest.skip("16-bit on one shape (the interpreter is slow; the GPU tests take every shape)")
    activate(impl, request)
    n, cin, cout, h, w, k, s, p, d, dg, groups, mask = shape
    args = inputs(n, cin, cout, h, w, k, s, p, d, dg, groups, mask)
    check_against_ref(impl_fn(impl, s, p, d), lambda *a: deform_conv2d_ref(*a[:4], s, p, d, a[4]), args,
                      _grad_idx(args), dtype, what=f"{impl} {shape}")


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
def test_far_outside_and_integer_offsets(impl, request):
    """Offsets that put every sample far outside (output = bias, zero gradients but weight's / bias'), and integer
    offsets (exact shifted copies)."""
    activate(impl, request)
    x, off, wt, b, m = inputs(1, 3, 2, 5, 6, seed=2)
    fn = impl_fn(impl, (1, 1), (1, 1), (1, 1))
    for val in (-1e6, 1e6, 2.0, -1.0, 0.0):
        o = torch.full_like(off, val)
        torch.testing.assert_close(fn(x, o, wt, b, m), deform_conv2d_ref(x, o, wt, b, 1, 1, 1, m), rtol=1e-5,
                                   atol=1e-5)


def test_public_errors():
    x, off, wt, b, m = inputs(1, 4, 3, 5, 6)
    with pytest.raises(ValueError, match="offset has 17 channels"):
        deform_conv2d(x, off[:, :17], wt, b, padding=1)
    with pytest.raises(ValueError, match="offset must be"):
        deform_conv2d(x, off, wt, b, padding=0)
    with pytest.raises(ValueError, match="mask must be"):
        deform_conv2d(x, off, wt, b, padding=1, mask=m[:, :4])
    with pytest.raises(ValueError, match="does not fit"):
        deform_conv2d(x, off, torch.randn(3, 3, 3, 3), b, padding=1)
    with pytest.raises(ValueError, match="deformable groups"):
        deform_conv2d(x, torch.randn(1, 54, 5, 6), wt, b, padding=1)
    with pytest.raises(ValueError, match="stride"):
        deform_conv2d(x, off, wt, b, stride=0, padding=1)
    with pytest.raises(TypeError, match="float"):
        deform_conv2d(x.long(), off, wt, b, padding=1)
    with pytest.raises(ValueError, match="one dtype"):
        deform_conv2d(x, off.double(), wt, b, padding=1)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_opcheck(backend):
    x, off, wt, b, m = [t.requires_grad_() for t in inputs(1, 4, 3, 4, 5, dg=2)]
    torch.library.opcheck(_deform_op, (x, off, wt, b, m, [1, 1], [1, 1], [1, 1], backend))
    torch.library.opcheck(_deform_op, (x, off, wt, None, None, [1, 1], [1, 1], [1, 1], backend))
    d = [t.detach() for t in (x, off, wt, m)]
    g = torch.randn(1, 3, 4, 5)
    torch.library.opcheck(_deform_bwd_op, (g, *d, [1, 1], [1, 1], [1, 1], [True, True, True, True], backend))
    torch.library.opcheck(_deform_bwd_op, (g, *d[:3], None, [1, 1], [1, 1], [1, 1], [False, True, False, False],
                                           backend))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_gradcheck_fp64(backend):
    """fp64 gradcheck (fast mode) of all five inputs, two deformable groups, stride 2 (offsets kept off integer sample points
    by a fractional bias: there the offset gradient is one-sided)."""
    x, off, wt, b, m = inputs(1, 4, 2, 5, 4, s=(2, 1), dg=2, seed=5, scale=0.4)
    args = [t.double().requires_grad_() for t in (x, off + 0.37, wt, b, m)]
    # fast mode (random projections): the full Jacobian is ~800 interpreted forward calls
    assert torch.autograd.gradcheck(lambda *a: _deform_op(*a, [2, 1], [1, 1], [1, 1], backend), args,
                                    fast_mode=True)


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_compile_fullgraph_with_backward(backend):
    args = inputs(1, 4, 3, 4, 5, dg=2)
    compile_check(lambda *a: forced(deform_conv2d, backend)(*a[:4], 1, 1, 1, a[4]),
                  lambda *a: deform_conv2d_ref(*a[:4], 1, 1, 1, a[4]), args, list(range(5)))


@pytest.mark.parametrize("impl", impl_params("cuda_emu"))
def test_cuda_tiles_and_weight_splits(impl, request):
    """The CUDA kernels' tiling edges (host-emulated): 70 output channels (two 64-wide output blocks, three 32-wide
    steps of the data gradient), 40 input channels (a 16-channel K chunk cut at 8) in deformable groups of 8 (two
    groups per chunk), 99 pixels (a partial pixel tile), d/dweight from 4 pixel-tile splits; fp64 to 1e-10, and
    d/dweight bitwise equal across runs (the splits are summed in a fixed order)."""
    activate(impl, request)
    s, p, d = (1, 1), (1, 1), (1, 1)
    args = [t.double() if t is not None else None for t in inputs(2, 40, 70, 9, 11, dg=5, seed=7)]
    g = torch.randn(2, 70, 9, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(impl_fn(impl, s, p, d)(*args), deform_conv2d_ref(*args[:4], s, p, d, args[4]),
                               rtol=1e-10, atol=1e-10)
    x, off, wt, _, m = args
    got = _deform_bwd_op(g, x, off, wt, m, [1, 1], [1, 1], [1, 1], [True] * 4, "cuda")
    want = _deform_bwd_op(g, x, off, wt, m, [1, 1], [1, 1], [1, 1], [True] * 4, "torch")
    for name, a, b in zip(("input", "offset", "weight", "mask"), got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=lambda msg: f"grad {name}: {msg}")
    again = _deform_bwd_op(g, x, off, wt, m, [1, 1], [1, 1], [1, 1], [False, False, True, False], "cuda")[2]
    assert torch.equal(again, got[2])


@pytest.mark.parametrize("impl", impl_params("cuda_emu"))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_cuda_16bit_tiles(impl, dtype, request):
    """The tensor-core forward and weight gradient (WMMA, emulated) and the 16-bit data gradient on the tiling edges of
    test_cuda_tiles_and_weight_splits, by the project's 16-bit rule."""
    activate(impl, request)
    s, p, d = (1, 1), (1, 1), (1, 1)
    args = inputs(2, 40, 70, 9, 11, dg=5, seed=7)
    check_against_ref(impl_fn(impl, s, p, d), lambda *a: deform_conv2d_ref(*a[:4], s, p, d, a[4]), args,
                      _grad_idx(args), dtype, what=f"{impl} tiles")


def test_cupy_launch_arguments_match_the_kernels(monkeypatch):
    """No GPU needed: the cupy backend's launches (the op's CUDA path -> vsr_engine/ops/_cupy.py launchers) pass
    exactly the parameters of the NVRTC-compiled kernels -- a pointer for each tensor / None, int64 for ``long
    long``, int32 for ``int`` -- with grids inside CUDA's limits."""
    import importlib
    import shutil
    from vsr_engine.ops import _cuda, _cupy
    dc = importlib.import_module("vsr_engine.ops.deform_conv2d")  # (the package attribute is the function)
    ok, why = _cupy.nvrtc_available()
    if not ok or shutil.which("c++filt") is None:
        pytest.skip(why if not ok else "c++filt not found")
    import numpy as np
    import subprocess
    calls = []
    monkeypatch.setattr(_cupy, "_launch", lambda mod, k, grid, block, a, smem=0: calls.append((mod, k, grid, a)))
    monkeypatch.setattr(_cuda, "call", lambda name, *a: _cupy._LAUNCH[name](*a))
    for dt in (torch.float32, torch.float16):  # fp16: the tensor-core forward and weight gradient
        x, off, wt, b, m = [t.to(dt) for t in inputs(2, 6, 4, 7, 5, (3, 2), (2, 1), (1, 0), (1, 2), 3, 2)]
        dc._cuda_fwd(x, off, wt, b, m, (2, 1), (1, 0), (1, 2), 4, 4)
        dc._cuda_bwd(torch.randn(2, 4, 4, 4, dtype=dt), x, off, wt, m, (2, 1), (1, 0), (1, 2), [True] * 4)
    names = sorted({k for _, k, _, _ in calls})
    assert names == ["bwd_data_kernel<__half>", "bwd_data_kernel<float>", "bwd_weight_kernel<float>",
                     "bwd_weight_tc_kernel<__half>", "fwd_kernel<float>", "fwd_tc_kernel<__half>"]
    assert set(names) <= set(_cupy.KERNELS["deform_conv2d"])
    _, lowered = _cupy.nvrtc_compile("deform_conv2d", names, "sm_90")
    dem = subprocess.run(["c++filt"], input="\n".join(lowered[k] for k in names), capture_output=True,
                         text=True).stdout.splitlines()
    params = {k: d[d.index(">(") + 2:d.rindex(")")].split(", ") for k, d in zip(names, dem)}
    for mod, k, grid, a in calls:
        assert mod == "deform_conv2d" and len(params[k]) == len(a), (k, params[k], a)
        for p, v in zip(params[k], a):
            want = ((torch.Tensor, type(None)) if p.endswith("*") else
                    {"long long": np.int64, "int": np.int32}[p])
            assert isinstance(v, want), (k, p, type(v))
        assert 1 <= grid[0] < 2 ** 31 and all(1 <= g <= 65535 for g in grid[1:]), (k, grid)


# ---- GPU (skipped without CUDA) ----------------------------------------------------------------------------
@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("shape", SHAPES + [(2, 64, 64, 64, 96, (3, 3), (1, 1), (1, 1), (1, 1), 8, 1, False)],
                         ids=str)
def test_gpu_matches_reference(backend, dtype, shape):
    n, cin, cout, h, w, k, s, p, d, dg, groups, mask = shape
    args = inputs(n, cin, cout, h, w, k, s, p, d, dg, groups, mask, device="cuda")
    fn = forced(deform_conv2d, backend)
    check_against_ref(lambda *a: fn(*a[:4], s, p, d, a[4]), lambda *a: deform_conv2d_ref(*a[:4], s, p, d, a[4]),
                      args, _grad_idx(args), dtype, what=f"{backend} {shape}", rtol=1e-4, atol=1e-4)


@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
def test_gpu_gradcheck_and_opcheck(backend):
    x, off, wt, b, m = inputs(1, 4, 2, 5, 4, dg=2, seed=5, scale=0.4, device="cuda")
    args = [t.double().requires_grad_() for t in (x, off + 0.37, wt, b, m)]
    assert torch.autograd.gradcheck(lambda *a: _deform_op(*a, [1, 1], [1, 1], [1, 1], backend), args)
    torch.library.opcheck(_deform_op, (*args, [1, 1], [1, 1], [1, 1], backend))


@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_gpu_far_outside_and_integer_offsets(backend, dtype):
    x, off, wt, b, m = [t.to(dtype) for t in inputs(1, 3, 2, 5, 6, seed=2, device="cuda")]
    fn = forced(deform_conv2d, backend)
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # 16-bit: the tensor-core path rounds the samples to 16 bits
    for val in (-1e4, 1e4, 2.0, -1.0, 0.0):
        o = torch.full_like(off, val)
        torch.testing.assert_close(fn(x, o, wt, b, 1, 1, 1, m), deform_conv2d_ref(x, o, wt, b, 1, 1, 1, m),
                                   rtol=tol, atol=tol)


@gpu
@pytest.mark.parametrize("backend", gpu_backends("cuda", "cupy"))
def test_gpu_weight_gradient_is_deterministic(backend):
    """d/dweight: per-split partial sums added in a fixed order, so two runs agree bit for bit."""
    x, off, wt, _, m = inputs(2, 64, 64, 32, 48, dg=8, device="cuda")
    g = torch.randn(2, 64, 32, 48, device="cuda")
    runs = [_deform_bwd_op(g, x, off, wt, m, [1, 1], [1, 1], [1, 1], [False, False, True, False], backend)[2]
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1])


# ---- vsr_engine.patch: torchvision / mmcv-shaped modules and module-level functions ---------------------------
class DeformConv2d(torch.nn.Module):
    """torchvision.ops.DeformConv2d's shape (name, parameters, forward(input, offset, mask=None)), with the
    reference as its forward: what patch() must recognise and replace."""

    def __init__(self, cin, cout, k=3, stride=1, padding=1, dilation=1, bias=True):
        super().__init__()
        self.stride, self.padding, self.dilation = (stride, stride), (padding, padding), (dilation, dilation)
        self.weight = torch.nn.Parameter(torch.randn(cout, cin, k, k) / (cin * k * k) ** 0.5)
        self.bias = torch.nn.Parameter(torch.randn(cout)) if bias else None

    def forward(self, x, offset, mask=None):
        return deform_conv2d_ref(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


class ModulatedDeformConv2d(DeformConv2d):
    """mmcv.ops.ModulatedDeformConv2d's shape: forward(x, offset, mask)."""


class DeformConv2dPack(DeformConv2d):
    """mmcv's *Pack: computes its own offsets (not the plain forward), so patch() must leave it alone."""

    def forward(self, x):
        return super().forward(x, torch.zeros(x.shape[0], 18, *x.shape[2:]))


deform_conv2d_global = deform_conv2d_ref  # a module-level name that is not "deform_conv2d": untouched


class Align(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.off = torch.nn.Conv2d(4, 2 * 2 * 9, 3, padding=1)
        self.dcn = DeformConv2d(4, 4, bias=False)
        self.mdcn = ModulatedDeformConv2d(4, 4)
        self.pack = DeformConv2dPack(4, 4)

    def forward(self, x):
        off = self.off(x)
        m = torch.sigmoid(off[:, :18])
        return self.dcn(x, off) + self.mdcn(x, off, m) + self.pack(x)


def test_patch_swaps_deform_modules_and_keeps_state():
    import importlib
    patch = importlib.import_module("vsr_engine.patch")
    torch.manual_seed(3)
    model = Align()
    x = torch.randn(1, 4, 6, 7)
    want = model(x)
    keys = list(model.state_dict())
    patch.patch(model)
    assert type(model.dcn) is patch.DeformConv and type(model.mdcn) is patch.DeformConv
    assert type(model.pack) is DeformConv2dPack
    assert patch.patch_report(model)["deform_conv2d"] == 2
    assert list(model.state_dict()) == keys
    got = model(x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    got.square().sum().backward()
    assert model.dcn.weight.grad is not None and model.off.weight.grad is not None
    patch.unpatch(model)
    assert type(model.dcn) is DeformConv2d and type(model.mdcn) is ModulatedDeformConv2d
