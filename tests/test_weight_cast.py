"""vsr_engine.weight_cast: bf16 weights that keep each kernel's tap sum (used by the fast step's bf16 plan)."""
import torch

from vsr_engine.weight_cast import _to_key, _value, cast_weight


def _w(seed=0, shape=(16, 8, 3, 3)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * 0.05


def test_keys_are_ordered_bf16_steps():
    x = torch.randn(5000).to(torch.bfloat16)
    x = x[x != 0]
    k = _to_key(x.view(torch.int16).numpy())
    inf = torch.tensor(float("inf"), dtype=torch.bfloat16)
    assert (_value(k) == x.double().numpy()).all()
    assert (_value(k + 1) == torch.nextafter(x, inf).double().numpy()).all()
    assert (_value(k - 1) == torch.nextafter(x, -inf).double().numpy()).all()


def test_tap_sums_kept_and_taps_within_one_step():
    w = _w()
    r, n, wd = cast_weight(w, torch.bfloat16), w.to(torch.bfloat16), w.double()
    assert r.dtype == torch.bfloat16 and r.shape == w.shape
    err_r = (r.double() - wd).sum((2, 3)).abs()
    err_n = (n.double() - wd).sum((2, 3)).abs()
    assert (err_r <= err_n + 1e-12).all()  # never worse than nearest, kernel by kernel
    assert err_r.mean() < err_n.mean() / 3
    inf = torch.tensor(float("inf"), dtype=torch.bfloat16)
    up, dn = torch.nextafter(n, inf), torch.nextafter(n, -inf)
    assert ((r == n) | (r == up) | (r == dn)).all()
    assert (r != n).any()


def test_plain_cast_where_nothing_to_keep():
    w = _w(1)
    assert torch.equal(cast_weight(w, torch.float16), w.to(torch.float16))
    w1 = _w(2, (8, 4, 1, 1))
    assert torch.equal(cast_weight(w1, torch.bfloat16), w1.to(torch.bfloat16))
    assert torch.equal(cast_weight(w, torch.float32), w)


def test_fast_step_bf16_uses_it_and_keeps_the_entry_in_fp32():
    from vsr_engine.fast import FastBasicVSR
    from vsr_engine.models.basicvsr import BasicVSR
    torch.manual_seed(0)
    core = BasicVSR(num_feat=16, num_block=2).eval()
    fast = FastBasicVSR(core, torch.bfloat16, graphs=False)
    blk = core.forward_trunk.main[2][0]
    assert torch.equal(fast.trunk_f.blocks[0][0], cast_weight(blk.conv1.weight, torch.bfloat16))
    assert fast.trunk_f.w_in.dtype == torch.float32 and fast.trunk_b.b_in.dtype == torch.float32
    # no islands: the entry convolution is 16-bit like the rest
    plain = FastBasicVSR(core, torch.bfloat16, graphs=False, fp32_islands=())
    assert plain.trunk_f.w_in.dtype == torch.bfloat16
    x = torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        ref = core(x)
        out = fast.forward(x).float()
    assert (out - ref).abs().max() < 0.05
