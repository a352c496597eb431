"""shuffle_nhwc: channels-last pixel shuffle x2 + bias + LeakyReLU equals the torch reference."""
import pytest
import torch

from op_testing import gpu, needs_interpret
from vsr_engine.ops.shuffle_nhwc import shuffle_nhwc, shuffle_nhwc_ref

CL = torch.channels_last


@needs_interpret
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("shape", [(1, 12, 3, 5), (2, 8, 4, 1)], ids=str)
def test_matches_reference(dtype, shape):
    g = torch.Generator().manual_seed(0)
    y = torch.randn(*shape, generator=g).to(dtype).contiguous(memory_format=CL)
    b = torch.randn(shape[1], generator=g).to(dtype)
    out = shuffle_nhwc(y, b, 0.1)
    tol = 0 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(out, shuffle_nhwc_ref(y, b, 0.1), rtol=tol, atol=tol)
    assert out.shape == (shape[0], shape[1] // 4, 2 * shape[2], 2 * shape[3])
    assert out.is_contiguous(memory_format=CL)


def test_rejects_bad_channels():
    with pytest.raises(ValueError, match="4C"):
        shuffle_nhwc(torch.randn(1, 6, 2, 2).contiguous(memory_format=CL))


@gpu
def test_gpu_matches_reference():
    y = torch.randn(1, 256, 90, 160, device="cuda", dtype=torch.float16).contiguous(memory_format=CL)
    b = torch.randn(256, device="cuda", dtype=torch.float16)
    torch.testing.assert_close(shuffle_nhwc(y, b).float(), shuffle_nhwc_ref(y, b).float(), rtol=1e-3, atol=1e-3)
