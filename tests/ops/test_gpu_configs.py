"""The triton kernels at the block configurations a CUDA run launches (not the interpreter's large blocks), run
under the interpreter (tl.dot held to triton 3.6's shape rule, conftest.py): dwpw_conv2d's 16x{16,32}x64 and
16x64x32 tiles with tl.dot (fp32 ieee / 16-bit; few channels padded) and its fp64 4x16x64 broadcast-sum tile,
flow_warp's backward with relaxed atomics, meta_upscale's per-class tl.dot forward and split weight reduction
(forced to several splits and several K chunks), pixel_shuffle / clean_step blocks, dyn_upsample's 64 / 32-pixel
blocks. Forward and backward, odd
shapes, fp32 and fp16, against each op's reference (the rules of op_testing.check_against_ref)."""
import pytest
import torch

import test_dwpw_conv2d as tdw
import test_dyn_upsample as tdu
import test_flow_warp as tfw
import test_meta_upscale as tmu
import test_pixel_shuffle as tps
from op_testing import check_against_ref, forced, needs_interpret
from vsr_engine.ops import (_util, clean_step, clean_step_ref, flow_warp, meta_upscale,
                            meta_upscale_ref, pixel_shuffle_lrelu, pixel_shuffle_lrelu_ref)

pytestmark = needs_interpret
DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])


@pytest.fixture(autouse=True)
def gpu_blocks(monkeypatch):
    """Block-size and dot-mode choices as on a GPU (INTERPRET=False in the choosing code only)."""
    import importlib
    monkeypatch.setattr(_util, "INTERPRET", False)
    monkeypatch.setattr(importlib.import_module("vsr_engine.ops.dwpw_conv2d"), "INTERPRET", False)


@pytest.mark.parametrize("shape,dtype,dot", [
    ((1, 3, 5, 13, 11), torch.float32, 1), ((1, 2, 3, 7, 9), torch.float16, 2), ((1, 20, 5, 7, 9), torch.float32, 1),
    ((1, 20, 33, 7, 9), torch.float32, 1), ((1, 20, 33, 7, 9), torch.float16, 2),
    ((1, 3, 5, 13, 11), torch.float64, 0)],
    ids=["c3o5_fp32", "c2o3_fp16", "c20o5_fp32", "c20o33_fp32", "c20o33_fp16", "c3o5_fp64"])
def test_dwpw_gpu_tiles(dtype, shape, dot):
    from vsr_engine.ops.dwpw_conv2d import _fwd_config
    assert _fwd_config(64, 64, 1, torch.float32) == (16, 64, 32, 4, 1)  # the GPU tile is what runs here
    assert _fwd_config(shape[1], shape[2], shape[3] * shape[4], dtype).dot == dot  # the path under test
    tdw.check("triton", tdw.inputs(*shape), "lrelu", dtype, f"gpu tiles {shape}")


@DTYPES
def test_flow_warp_gpu_blocks(dtype):
    x, flow = tfw.inputs(2, 17, 5, 29)  # 145 pixels: two 128-pixel blocks; 17 channels: three 8-channel chunks
    check_against_ref(lambda a, b: forced(flow_warp, "triton")(a, b, "bilinear", "zeros", True),
                      lambda a, b: tfw.ref(a, b), [x, flow], [0, 1], dtype, what="gpu blocks")


@pytest.mark.parametrize("case,split,dtype", [
    ((1, 3, 7, 9, 2.0, 3, 3), 3, torch.float32), ((1, 3, 7, 9, 2.0, 3, 3), 3, torch.float16),
    ((2, 5, 6, 5, 4.0, 3, 3), 1, torch.float32), ((2, 5, 6, 5, 4.0, 3, 3), 3, torch.float16),
    ((1, 20, 4, 6, 1.5, 2, 1), 2, torch.float32)], ids=lambda v: str(v).replace(" ", ""))
def test_meta_upscale_dot_and_split(dtype, case, split, monkeypatch):
    """Small tiles (16) so the K loop, the pixel loop and several programs per class all run; split forced."""
    import importlib
    mu = importlib.import_module("vsr_engine.ops.meta_upscale")
    monkeypatch.setattr(mu, "_dot_blocks", lambda o, dot, npix: (max(16, o) if dot else 4, 16, 16))
    monkeypatch.setattr(mu, "_wt_split", lambda *a: split)
    n, c, h, w, scale, o, k = case
    args = tmu.inputs(n, c, h, w, o, k)
    check_against_ref(forced(lambda f, *a: meta_upscale(f, scale, *a, out_channels=o, kernel_size=k), "triton"),
                      lambda f, *a: meta_upscale_ref(f, scale, *a, o, k), args, list(range(5)), dtype,
                      what=f"split {split} {case}", rtol=2e-5, atol=2e-5)


def test_meta_upscale_split_choice():
    from vsr_engine.ops.meta_upscale import _wt_split
    assert _wt_split(16, 9, 2 * 518400, 64) == 8  # x4 at 540x960: 16 classes x 9 K blocks -> 8 splits
    assert _wt_split(5000, 9, 300, 64) == 1       # many classes: already parallel
    assert _wt_split(1, 1, 100, 64) == 1          # too few pixels to split


@DTYPES
def test_pixel_shuffle_and_clean_step_gpu_blocks(dtype):
    x, b = tps.inputs(1, 3, 2, 37, 41)  # 3*4*37*41 = 18204 elements: several 1024 blocks
    check_against_ref(lambda a, bb: forced(pixel_shuffle_lrelu, "triton")(a, 2, bb),
                      lambda a, bb: pixel_shuffle_lrelu_ref(a, 2, bb), [x, b], [0, 1], dtype, what="ps")
    g = torch.Generator().manual_seed(0)
    xs, rs = torch.rand(2, 3, 41, 43, generator=g), torch.randn(2, 3, 41, 43, generator=g) * 0.1
    check_against_ref(forced(clean_step, "triton"), clean_step_ref, [xs, rs], [0, 1], dtype, what="clean_step")


@DTYPES
def test_dyn_upsample_gpu_blocks(dtype):
    from vsr_engine.ops.dyn_upsample import _launch_config
    assert _launch_config(3, 10 ** 5) == (4, 64, 4) and _launch_config(3, 10 ** 5, bwd=True) == (4, 32, 4)
    tdu.check("triton", (1, 3, 4, 9, 13), dtype, "gpu blocks x4")  # 117 pixels: 2 forward / 4 backward programs
    tdu.check("triton", (2, 2, 3, 7, 11), dtype, "gpu blocks x3")
