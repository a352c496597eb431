"""vsr_engine.fast: the channels-last / fused / CUDA-graph step computes the same function as the models."""
import numpy as np
import pytest
import torch

from vsr_engine import Engine
from vsr_engine.fast import FastBasicVSR, GraphCache, accelerate, supported
from vsr_engine.models.basicvsr import BasicVSR
from vsr_engine.models.dscvsr import DSCVSR
from vsr_engine.models.realbasicvsr import RealBasicVSR

HAS_CUDA = torch.cuda.is_available()


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    m = BasicVSR(num_feat=kw.get("num_feat", 16), num_block=kw.get("num_block", 2)).eval()
    with torch.no_grad():  # biases away from zero so a dropped bias or a wrong permutation shows
        for p in m.parameters():
            if p.dim() == 1:
                p.add_(0.05 * torch.randn_like(p))
    return m


@pytest.fixture(params=["cpu-fused", "kernels"])
def epilogues(request, monkeypatch):
    """Both ways the step can run here: oneDNN's fused convolutions (the CPU plan) and the CUDA composition
    (bias-free convolutions + the Triton epilogue kernels, interpreted when TRITON_INTERPRET=1)."""
    import vsr_engine.fast as fast
    if request.param == "cpu-fused" and not fast._mkldnn_ok():
        pytest.skip("no oneDNN in this torch build")
    monkeypatch.setattr(fast, "CPU_FUSED", request.param == "cpu-fused")
    return request.param


@pytest.mark.parametrize("shape", [(1, 4, 3, 20, 36), (2, 3, 3, 13, 7), (1, 1, 3, 9, 9)], ids=str)
def test_fp32_equals_model_forward(shape, epilogues):
    m = _model()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = m(x)
        out = FastBasicVSR(m, dtype=torch.float32, graphs=False).forward(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_catches_a_wrong_weight_layout(epilogues):
    """The comparison above can fail: permuting the trunk's input channels back breaks it."""
    m = _model()
    x = torch.rand(1, 3, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    f = FastBasicVSR(m, dtype=torch.float32, graphs=False)
    f.trunk_f.w_in = f.trunk_f.w_in.roll(3, dims=1).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert (f.forward(x) - m(x)).abs().max().item() > 1e-3


def test_fp16_close_to_fp32():
    m = _model()
    x = torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = m(x)
        out = FastBasicVSR(m, dtype=torch.float16, flow_dtype=torch.float32, graphs=False).forward(x).float()
    psnr = 10 * np.log10(1.0 / (out - ref).square().mean().item())
    assert psnr > 45, psnr


def test_realbasicvsr_accelerated_equals_forward():
    torch.manual_seed(0)
    m = RealBasicVSR(num_feat=8, num_propagation_blocks=2, num_cleaning_blocks=1).eval()
    x = torch.rand(1, 3, 3, 10, 12, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(accelerate(m, dtype=torch.float32, graphs=False)(x), m(x), rtol=1e-5, atol=1e-5)


def test_realbasicvsr_cleaning_passes_and_engine(epilogues):
    torch.manual_seed(1)
    m = RealBasicVSR(num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=2, dynamic_refine_thres=1.5).eval()
    x = torch.rand(1, 4, 3, 11, 9, generator=torch.Generator().manual_seed(5))
    acc = accelerate(m, dtype=torch.float32, graphs=False)
    with torch.no_grad():
        ref_clean, ref_passes = m.clean(x)
        got_clean, got_passes = acc.fast.clean(x)
        assert got_passes == ref_passes
        torch.testing.assert_close(got_clean, ref_clean, rtol=1e-5, atol=1e-5)
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (10, 14, 3), dtype=np.uint8) for _ in range(7)]
    a = Engine(m, device="cpu", dtype="fp32", window=3, overlap=1, fast=False).upscale_frames(frames)
    b = Engine(m, device="cpu", dtype="fp32", window=3, overlap=1, fast=True).upscale_frames(frames)
    assert max(np.abs(p.astype(int) - q.astype(int)).max() for p, q in zip(a, b)) <= 1


def test_unsupported_models_say_so():
    assert supported(_model())
    d = DSCVSR()
    assert not supported(d)
    with pytest.raises(TypeError, match="no fast step"):
        accelerate(d)


@pytest.mark.parametrize("window,overlap", [(4, 2), (3, 0)])
def test_engine_fast_equals_plain(window, overlap):
    m = _model(num_feat=8)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (12, 20, 3), dtype=np.uint8) for _ in range(9)]
    a = Engine(m, device="cpu", dtype="fp32", window=window, overlap=overlap, fast=False)
    b = Engine(m, device="cpu", dtype="fp32", window=window, overlap=overlap, fast=True)
    assert a.fast is None and b.fast is not None
    oa, ob = a.upscale_frames(frames), b.upscale_frames(frames)
    assert len(oa) == len(ob) == 9
    assert max(np.abs(p.astype(int) - q.astype(int)).max() for p, q in zip(oa, ob)) <= 1


def test_engine_fast_default_is_cuda_half_only():
    m = _model()
    assert Engine(m, device="cpu", dtype="fp32").fast is None  # CPU: off unless asked
    with pytest.raises(Exception, match="no fast step"):
        Engine(DSCVSR(), device="cpu", dtype="fp32", fast=True)


def test_graph_cache_off_cuda_calls_through_and_keys_ignore_size1_strides():
    calls = []
    gc = GraphCache(lambda a: calls.append(a) or a * 2)
    x = torch.ones(2, 3)
    assert torch.equal(gc(x), x * 2) and len(calls) == 1 and gc.captures == 0
    big = torch.zeros(1, 5, 3, 4, 4)
    k1 = GraphCache._key([big[:, 1]])
    k2 = GraphCache._key([torch.zeros(1, 9, 3, 4, 4)[:, 2]])
    assert k1 == k2  # frame k of a 5- or a 9-frame window: one graph
    assert GraphCache._key([torch.zeros(2, 3)]) != GraphCache._key([torch.zeros(3, 2).t()])


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_gpu_graph_replay_equals_eager_and_model():
    m = _model(num_feat=64, num_block=3).cuda()
    x = torch.rand(1, 5, 3, 64, 96, device="cuda")
    with torch.no_grad():
        ref = m.half()(x.half()).float()
        m.float()
        eager = FastBasicVSR(m, dtype=torch.float16, flow_dtype=torch.float16, graphs=False).forward(x).float()
        fg = FastBasicVSR(m, dtype=torch.float16, flow_dtype=torch.float16, graphs=True)
        g1 = fg.forward(x).float()
        g2 = fg.forward(x).float()  # replayed
    st = fg.graph_stats()
    assert st["step_b"]["captures"] == 1 and st["step_b"]["replays"] >= 6 and st["step_b"]["failed"] is None
    torch.testing.assert_close(g2, g1, rtol=0, atol=0)  # a replay is the captured kernels again
    torch.testing.assert_close(g1, eager, rtol=1e-3, atol=1e-3)
    assert (eager - ref).abs().max().item() < 0.05
