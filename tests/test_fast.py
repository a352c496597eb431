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


def test_a_dtype_onednn_refuses_runs_unfused(monkeypatch):
    """fp16 on a CPU without AVX512-FP16 / AVX-NE-CONVERT (an AMD EPYC with AVX512-BF16): oneDNN's fused convolution
    raises, so the fast step must take the unfused composition for that dtype (it crashed before)."""
    import vsr_engine.fast as fast_mod
    if not fast_mod.CPU_FUSED:
        pytest.skip("no oneDNN in this torch build")
    x = torch.zeros(1, 1, 2, 2, dtype=torch.float16)
    try:
        torch.ops.mkldnn._convolution_pointwise(x, torch.zeros(1, 1, 1, 1, dtype=torch.float16), None, [0, 0],
                                               [1, 1], [1, 1], 1, "none", [], "")
        native = True
    except RuntimeError:
        native = False
    assert fast_mod._cpu_fused(torch.float16) == native and fast_mod._cpu_fused(torch.float32)
    monkeypatch.setitem(fast_mod._FUSED_DTYPES, torch.float16, False)      # as on a CPU that refuses fp16
    m = _model()
    x = torch.rand(1, 3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = m(x)
        out = FastBasicVSR(m, dtype=torch.float16, flow_dtype=torch.float32, graphs=False).forward(x).float()
    assert 10 * np.log10(1.0 / (out - ref).square().mean().item()) > 45


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


def _bf16_conv_operands(seed=0, c=32, h=11, w=14):
    g = torch.Generator().manual_seed(seed)
    cl = torch.channels_last
    x = torch.randn(1, c, h, w, generator=g).relu().to(torch.bfloat16).contiguous(memory_format=cl)
    wt = (torch.randn(c, c, 3, 3, generator=g) * 0.06).to(torch.bfloat16).contiguous(memory_format=cl)
    b = (torch.randn(c, generator=g) * 0.1).to(torch.bfloat16)
    return x, wt, b


def test_conv_residue_gives_the_fp32_convolution_of_bf16_operands(epilogues):
    import torch.nn.functional as F

    from vsr_engine.fast import conv_act, conv_residue
    x, wt, b = _bf16_conv_operands()
    ref = F.conv2d(x.double(), wt.double(), b.double(), 1, 1)
    y = conv_act(x, wt, b, "none", 1)
    r = conv_residue(x, wt, b, y)
    assert r.dtype == torch.bfloat16 and r.is_contiguous(memory_format=torch.channels_last)
    scale = ref.abs().max()
    err_hi = (y.double() - ref).abs().max() / scale
    err_comp = (y.double() + r.double() - ref).abs().max() / scale
    assert err_hi > 2 ** -12                     # bf16 output: ~2^-9 of the largest value
    assert err_comp < 2 ** -15 and err_comp < err_hi / 50


def test_compensated_blocks_feed_the_fp32_stream_at_fp32():
    """The CPU plan's bf16 trunk with every block compensated matches an fp32 emulation in which only the block inputs
    and the between-conv activations are bf16 (the conv2 outputs exact); without the second pass it does not.
    (oneDNN only: the CUDA composition rounds the between-conv activation twice, conv then bias, so it differs.)"""
    import torch.nn.functional as F

    import vsr_engine.fast as fast_mod
    if not fast_mod.CPU_FUSED:
        pytest.skip("no oneDNN in this torch build")
    m = _model(num_feat=32, num_block=3)
    lq = torch.rand(1, 3, 12, 15, generator=torch.Generator().manual_seed(2))
    fast = FastBasicVSR(m, torch.bfloat16, graphs=False, compensated_blocks=3)
    plain = FastBasicVSR(m, torch.bfloat16, graphs=False, compensated_blocks=0)
    assert fast.trunk_f.compensated == frozenset({0, 1, 2}) and not plain.trunk_f.compensated
    tw = fast.trunk_f
    buf = torch.zeros(1, tw.cin, 12, 15)
    buf[:, fast.num_feat:fast.num_feat + 3] = lq
    with torch.no_grad():
        acc = F.leaky_relu(F.conv2d(buf, tw.w_in.float(), tw.b_in.float(), 1, 1), 0.1)
        for w1, b1, w2, b2 in tw.blocks:
            x = acc.to(torch.bfloat16).float()
            mid = F.relu(F.conv2d(x, w1.float(), b1.float(), 1, 1)).to(torch.bfloat16).float()
            acc = acc + F.conv2d(mid, w2.float(), b2.float(), 1, 1)
        got = fast.step(lq, None, None, backward=False).float()
        got_plain = plain.step(lq, None, None, backward=False).float()
    err = (got - acc).abs().mean() / acc.abs().mean()
    err_plain = (got_plain - acc).abs().mean() / acc.abs().mean()
    print(f"compensated {err:.2e}, plain {err_plain:.2e}")
    assert err_plain > 3e-4
    assert err < err_plain / 20
    with pytest.raises(ValueError, match="compensated_blocks"):
        FastBasicVSR(m, torch.bfloat16, graphs=False, compensated_blocks=4)
    with pytest.raises(ValueError, match="residual fp32 island"):
        FastBasicVSR(m, torch.bfloat16, graphs=False, fp32_islands=("output",), compensated_blocks=1)


def test_engine_fast_step_weights_come_from_fp32():
    """The Engine casts its module to the run dtype in place; the fast step's bf16 weights (tap sums kept) and its
    fp32 islands must still be made from the fp32 values, not from the already-rounded module."""
    from vsr_engine.weight_cast import cast_weight
    m = _model()
    w1 = m.forward_trunk.main[2][0].conv1.weight.detach().clone()
    w_in = m.forward_trunk.main[0].weight.detach().clone()
    eng = Engine(m, device="cpu", dtype="bfloat16", fast=True)
    assert next(eng.model.parameters()).dtype == torch.bfloat16          # the module itself runs in bf16
    assert torch.equal(eng.fast.trunk_f.blocks[0][0], cast_weight(w1, torch.bfloat16))
    assert eng.fast.trunk_f.w_in.dtype == torch.float32
    assert torch.equal(eng.fast.trunk_f.w_in[:, :16], w_in[:, 3:])       # fp32 island: unrounded entry weights
