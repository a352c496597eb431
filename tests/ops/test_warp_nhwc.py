"""warp_nhwc: channels-last flow warp equals flow_warp's reference (zeros and border), into channel slices too."""
import pytest
import torch

from op_testing import gpu, needs_interpret
from vsr_engine.ops import flow_warp
from vsr_engine.ops.warp_nhwc import warp_nhwc, warp_nhwc_ref

CL = torch.channels_last


def _inputs(n, c, h, w, scale=3.0, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g).to(device, dtype).contiguous(memory_format=CL)
    flow = (torch.randn(n, 2, h, w, generator=g) * scale).to(device)
    return x, flow


@needs_interpret
@pytest.mark.parametrize("pm", ["zeros", "border"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (2, 16, 5, 11), (1, 5, 1, 6)], ids=str)
def test_matches_reference_fp32(pm, shape):
    x, flow = _inputs(*shape)
    out = warp_nhwc(x, flow, pm)
    torch.testing.assert_close(out, warp_nhwc_ref(x, flow, pm), rtol=1e-5, atol=1e-5)
    # and the NCHW op on the same data
    torch.testing.assert_close(out, flow_warp(x.contiguous(), flow.permute(0, 2, 3, 1), padding_mode=pm),
                               rtol=1e-5, atol=1e-5)


@needs_interpret
def test_fp16_features_fp32_coordinates():
    x, flow = _inputs(1, 8, 6, 13, seed=2, dtype=torch.float16)
    out = warp_nhwc(x, flow)
    ref64 = warp_nhwc_ref(x.double(), flow.double())
    assert (out.double() - ref64).abs().max().item() <= 2e-3


@needs_interpret
def test_writes_into_a_channel_slice_and_reads_one():
    x, flow = _inputs(1, 4, 5, 7, seed=1)
    src = torch.randn(1, 10, 5, 7).contiguous(memory_format=CL)
    src[:, 3:7] = x
    buf = torch.full((1, 6, 5, 7), -9.0).contiguous(memory_format=CL)
    warp_nhwc(src[:, 3:7], flow, out=buf[:, 1:5])
    torch.testing.assert_close(buf[:, 1:5], warp_nhwc_ref(x, flow), rtol=1e-5, atol=1e-5)
    assert (buf[:, 0] == -9).all() and (buf[:, 5] == -9).all()


def test_shape_errors():
    x, flow = _inputs(1, 3, 4, 4)
    with pytest.raises(ValueError, match="does not match"):
        warp_nhwc(x, flow[:, :, :3])
    with pytest.raises(ValueError, match="padding_mode"):
        warp_nhwc(x, flow, "reflection")


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("pm", ["zeros", "border"])
def test_gpu_matches_fp64_reference(dtype, pm):
    x, flow = _inputs(2, 64, 180, 320, device="cuda", dtype=dtype)
    out = warp_nhwc(x, flow, pm)
    ref64 = warp_nhwc_ref(x.double(), flow.double(), pm)
    ref = warp_nhwc_ref(x, flow, pm)  # PyTorch in this dtype: the yardstick for the kernel's error
    e_k = (out.double() - ref64).abs().max().item()
    e_t = (ref.double() - ref64).abs().max().item()
    assert e_k <= 2 * e_t + torch.finfo(dtype).eps * 4, (e_k, e_t)
