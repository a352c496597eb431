"""flow_warp: every implementation equals the reference (forward and backward), plus custom-op checks."""
import pytest
import torch
import torch.nn.functional as F

from op_testing import (activate, check_against_ref, compile_check, forced, gpu, gpu_backends, impl_params,
                        needs_interpret, run)
from vsr_engine.ops import flow_warp, flow_warp_ref
from vsr_engine.ops.flow_warp import _flow_warp_bwd_op, _flow_warp_op

IMPLS = {
    "triton": lambda x, f, pm="zeros", ac=True: forced(flow_warp, "triton")(x, f, padding_mode=pm, align_corners=ac),
    "torch_op": lambda x, f, pm="zeros", ac=True: _flow_warp_op(x, f, pm, ac, "torch"),
    "cuda_emu": lambda x, f, pm="zeros", ac=True: _flow_warp_op(x, f, pm, ac, "cuda"),
}


def ref(x, f, pm="zeros", ac=True):
    return flow_warp_ref(x, f, "bilinear", pm, ac)


MARGIN = 1e-3  # px between a test sample point and the nearest pixel row / column (see inputs)


def inputs(n, c, h, w, scale=3.0, seed=0, device="cpu", margin=MARGIN):
    """Random features and a random flow whose sample points (x + u, y + v) all lie >= ``margin`` px from a pixel
    row / column. There the flow gradient jumps (the bilinear weights' derivative is one-sided: floor decides which
    pixel pair it differences), so an fp32 implementation within rounding of such a point may legitimately take
    either side, and its error vs fp64 is then O(1): on the H200 the fp32 reference did exactly that (flow value
    -5.0, sample on row 8: its [-1, 1] round trip lands 1 ulp below and differences rows 7/8, error 9.47).
    Exact integer sample points are tested on their own (test_integer_sample_points)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    flow = torch.randn(n, 2, h, w, generator=g).double() * scale
    if margin:
        pos = torch.stack(torch.meshgrid(torch.arange(w, dtype=torch.float64), torch.arange(h, dtype=torch.float64),
                                         indexing="xy"))  # (2, H, W): x, y
        frac = (pos + flow) - (pos + flow).floor()
        flow = torch.where(frac < margin, flow + 2 * margin, torch.where(frac > 1 - margin, flow - 2 * margin, flow))
    # (N, 2, H, W) permuted like the models do: a non-contiguous (N, H, W, 2) flow
    flow = flow.float().permute(0, 2, 3, 1)
    return x.to(device), flow.to(device)


@pytest.mark.parametrize("impl", impl_params("triton", "torch_op", "cuda_emu"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("pm", ["zeros", "border"])
@pytest.mark.parametrize("shape", [(1, 2, 7, 9), (1, 3, 13, 17), (1, 64, 11, 13), (2, 3, 1, 5)],
                         ids=lambda s: "x".join(map(str, s)))
def test_matches_reference(impl, dtype, pm, shape, request):
    activate(impl, request)
    x, flow = inputs(*shape)
    check_against_ref(lambda a, b: IMPLS[impl](a, b, pm), lambda a, b: ref(a, b, pm), [x, flow], [0, 1], dtype,
                      what=f"{impl} {pm} {tuple(shape)}")


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
@pytest.mark.parametrize("pm", ["zeros", "border"])
def test_fp32_at_320_wide(impl, pm, request):
    """The H200's failing fp32 shape (2, 64, 180, 320) with 4 channels: at 320 px the fp32 reference itself is off
    fp64 by ~1.2e-4 (output) and ~1e-3 (flow gradient), so the rule's FACTOR x reference error applies."""
    activate(impl, request)
    x, flow = inputs(1, 4, 180, 320)
    check_against_ref(lambda a, b: IMPLS[impl](a, b, pm), lambda a, b: ref(a, b, pm), [x, flow], [0, 1],
                      torch.float32, what=f"{impl} {pm} 180x320")


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
@pytest.mark.parametrize("pm", ["zeros", "border"])
def test_integer_sample_points(impl, pm, request):
    """Sample points exactly on pixels (integer flows, the points inputs() keeps away from), inside the image. The
    flow gradient is one-sided there; the kernels compute x + u exactly and take floor's side, the right-hand
    derivative -- grid_sample, fp32 or fp64, takes whichever side its [-1, 1] round trip lands on (at x = 3 of
    320 the fp64 one lands below). So the reference here is the right-hand difference of the fp64 reference
    ((out(u + e) - out(u)) / e, exact: bilinear is linear inside a cell), and the output and d/dx are compared
    with the fp64 reference itself; 1e-5."""
    activate(impl, request)
    g = torch.Generator().manual_seed(7)
    h, w = 9, 320
    x = torch.randn(1, 3, h, w, generator=g)
    pos = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(h), indexing="xy"), -1)[None]  # (1, H, W, 2)
    target = (pos + torch.randint(-2, 3, (1, h, w, 2), generator=g)).clamp(min=1)
    target = torch.minimum(target, torch.tensor([w - 2, h - 2]))  # interior: both padding modes agree
    flow = (target - pos).float()
    gout = torch.randn(1, 3, h, w, generator=g)
    (ok,), gk = run(lambda a, b: IMPLS[impl](a, b, pm), [x, flow], [0, 1], [gout])
    x64, f64, g64 = x.double(), flow.double(), gout.double()
    (o64,), (gx64, _) = run(lambda a, b: ref(a, b, pm), [x64, f64], [0, 1], [g64])
    torch.testing.assert_close(ok.double(), o64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gk[0].double(), gx64, rtol=1e-5, atol=1e-5)
    e = 1e-3
    for comp in (0, 1):
        fe = f64.clone()
        fe[..., comp] += e
        right = ((ref(x64, fe, pm) - o64) * g64).sum(1) / e  # (1, H, W)
        torch.testing.assert_close(gk[1][..., comp].double(), right, rtol=1e-5, atol=1e-5, msg=lambda m: f"{comp}: {m}")


@pytest.mark.parametrize("impl", impl_params("triton", "cuda_emu"))
@pytest.mark.parametrize("pm", ["zeros", "border"])
def test_align_corners_false_and_fp16_flow(impl, pm, request):
    activate(impl, request)
    x, flow = inputs(1, 3, 6, 11, seed=3)
    check_against_ref(lambda a, b: IMPLS[impl](a, b, pm, False), lambda a, b: ref(a, b, pm, False), [x, flow],
                      [0, 1], torch.float32, what="align_corners=False")
    # an fp16 flow with fp32 features: coordinates still computed in fp32
    f16 = flow.half()
    out = IMPLS[impl](x, f16, pm)
    torch.testing.assert_close(out, ref(x, f16.float(), pm), rtol=1e-5, atol=1e-5)


@needs_interpret
def test_coordinates_in_fp32_for_fp16_features():
    """At 960 px the official fp16 grid is off by up to ~0.25 px; the op must match the fp32 result instead."""
    h, w = 3, 960
    x = torch.linspace(0, 1, w).repeat(1, 1, h, 1)  # a ramp: the error shows as a shift
    flow = torch.full((1, h, w, 2), 0.37)
    flow[..., 1] = 0
    exact = flow_warp_ref(x.double(), flow.double())
    out = forced(flow_warp, "triton")(x.half(), flow.half())
    # official-style: the grid built in fp16
    gy, gx = torch.meshgrid(torch.arange(h).half(), torch.arange(w).half(), indexing="ij")
    vx = 2.0 * (gx + flow.half()[..., 0]) / (w - 1) - 1.0
    vy = 2.0 * (gy + flow.half()[..., 1]) / (h - 1) - 1.0
    official = F.grid_sample(x.float(), torch.stack((vx, vy), 3).float(), align_corners=True)
    e_ours = (out.double() - exact).abs().max().item()
    e_official = (official.double() - exact).abs().max().item()
    assert e_ours < 1e-3 < e_official


@needs_interpret
def test_far_out_of_range_and_integer_flows():
    """Flows far outside the image (all corners zero) and integer flows (exact copies) behave like the reference."""
    x = torch.randn(1, 2, 5, 7)
    for val in (-1e6, 1e6, 3.0, -2.0, 0.0):
        flow = torch.full((1, 5, 7, 2), val)
        for pm in ("zeros", "border"):
            torch.testing.assert_close(forced(flow_warp, "triton")(x, flow, padding_mode=pm), ref(x, flow, pm),
                                       rtol=1e-6, atol=1e-6)


def test_mmagic_keyword_and_fallbacks():
    x, flow = inputs(1, 2, 5, 6)
    torch.testing.assert_close(flow_warp(x, flow, interpolation="bilinear"), ref(x, flow))
    # modes without a kernel run the reference
    torch.testing.assert_close(flow_warp(x, flow, "nearest"), flow_warp_ref(x, flow, "nearest"))
    torch.testing.assert_close(flow_warp(x, flow, padding_mode="reflection"),
                               flow_warp_ref(x, flow, padding_mode="reflection"))
    with pytest.raises(ValueError, match="does not match"):
        flow_warp(x, flow[:, :4])


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_opcheck(backend):
    x, flow = inputs(1, 3, 5, 7)
    x.requires_grad_(True)
    flow.requires_grad_(True)
    for pm in ("zeros", "border"):
        torch.library.opcheck(_flow_warp_op, (x, flow, pm, True, backend))
    g = torch.randn(1, 3, 5, 7)
    torch.library.opcheck(_flow_warp_bwd_op, (g, x.detach(), flow.detach(), "zeros", True, True, False, backend))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
@pytest.mark.parametrize("pm", ["zeros", "border"])
def test_gradcheck_fp64(backend, pm):
    x, flow = inputs(1, 2, 3, 4, scale=1.3, seed=5)
    x, flow = x.double().requires_grad_(), flow.double().contiguous().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _flow_warp_op(a, b, pm, True, backend), (x, flow))


@pytest.mark.parametrize("backend", [pytest.param("triton", marks=needs_interpret), "torch"])
def test_compile_fullgraph_with_backward(backend):
    x, flow = inputs(1, 3, 6, 7)
    compile_check(forced(flow_warp, backend), ref, [x, flow], [0, 1])


# ---- GPU (skipped without CUDA): triton and cuda kernels, fp32 / fp16 / bf16, real sizes ----------------------
@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("pm", ["zeros", "border"])
@pytest.mark.parametrize("shape", [(1, 2, 7, 9), (1, 64, 11, 13), (2, 64, 180, 320)], ids=str)
def test_gpu_matches_reference(backend, dtype, pm, shape):
    x, flow = inputs(*shape, device="cuda")
    check_against_ref(lambda a, b: forced(flow_warp, backend)(a, b, padding_mode=pm), lambda a, b: ref(a, b, pm),
                      [x, flow], [0, 1], dtype, what=f"{backend} {pm}")


@gpu
@pytest.mark.parametrize("backend", gpu_backends("triton", "cuda", "cupy"))
def test_gpu_gradcheck_and_opcheck(backend):
    x, flow = inputs(1, 2, 4, 5, scale=1.3, seed=5, device="cuda")
    x, flow = x.double().requires_grad_(), flow.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: _flow_warp_op(a, b, "zeros", True, backend), (x, flow))
    torch.library.opcheck(_flow_warp_op, (x, flow, "zeros", True, backend))
