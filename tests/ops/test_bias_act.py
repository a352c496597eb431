"""bias_act (channels-last conv epilogue): triton (interpreted here, compiled on a GPU) against the torch reference."""
import pytest
import torch

from op_testing import HAS_CUDA, gpu, needs_interpret
from vsr_engine.ops.bias_act import bias_act, bias_act_ref, pixel_stride

CL = torch.channels_last


def _make(n, c, h, w, dtype, device="cpu", extra=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, c + extra, h, w, generator=g).to(device, dtype).contiguous(memory_format=CL)[:, :c]
    z = torch.randn(n, c, h, w, generator=g).to(device, dtype).contiguous(memory_format=CL)
    b = torch.randn(c, generator=g).to(device, dtype)
    return y, z, b


@needs_interpret
@pytest.mark.parametrize("act", ["none", "relu", "lrelu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_matches_reference(act, dtype, residual):
    y, z, b = _make(2, 5, 3, 7, dtype, extra=3)  # y: a channel slice of a wider buffer (pixel stride 8)
    assert pixel_stride(y) == 8
    zz = z if residual else None
    out = bias_act(y, b, act, 0.1, z=zz)
    ref = bias_act_ref(y, b, act, 0.1, zz)
    tol = 0 if dtype == torch.float32 else 1e-3
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)
    assert out.is_contiguous(memory_format=CL)


@needs_interpret
def test_in_place_into_a_slice_and_residual():
    y, z, b = _make(1, 4, 5, 6, torch.float32)
    buf = torch.full((1, 9, 5, 6), 7.0).contiguous(memory_format=CL)
    ref = bias_act_ref(y, b, "none", z=z)
    bias_act(y, b, "none", z=z, out=buf[:, 2:6])
    torch.testing.assert_close(buf[:, 2:6], ref, rtol=0, atol=0)
    assert (buf[:, :2] == 7).all() and (buf[:, 6:] == 7).all()  # nothing outside the slice was touched
    z2 = z.clone()
    bias_act(y, b, "relu", z=z2, out=z2)  # in place over the residual
    torch.testing.assert_close(z2, bias_act_ref(y, b, "relu", z=z), rtol=0, atol=0)


def test_rejects_non_channels_last_and_bad_args():
    y = torch.randn(1, 4, 3, 3)  # NCHW-contiguous, 4 channels: not channels-last
    with pytest.raises(ValueError, match="channels-last"):
        pixel_stride(y)
    with pytest.raises(ValueError, match="unknown act"):
        bias_act(y.contiguous(memory_format=CL), None, "gelu")
    with pytest.raises(ValueError, match="bias"):
        bias_act(y.contiguous(memory_format=CL), torch.zeros(3))


def test_torch_path_without_triton_matches_reference(monkeypatch):
    from vsr_engine.ops import bias_act as mod
    monkeypatch.setattr(mod, "TRITON_OK", False)
    y, z, b = _make(1, 3, 4, 4, torch.float32)
    torch.testing.assert_close(mod.bias_act(y, b, "lrelu", z=z), bias_act_ref(y, b, "lrelu", 0.1, z))


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_gpu_matches_reference(dtype):
    y, z, b = _make(1, 64, 180, 320, dtype, device="cuda", extra=8)
    out = bias_act(y, b, "relu", z=z)
    ref = bias_act_ref(y, b, "relu", 0.1, z)
    tol = 1e-6 if dtype == torch.float32 else (1e-3 if dtype == torch.float16 else 1e-2)
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol)
    assert HAS_CUDA
