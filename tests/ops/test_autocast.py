"""The custom ops under autocast (vsr_engine/ops/_autocast.py): inputs cast to the autocast dtype, gradients back
to the fp32 weights; within ``weight_cast_cache`` (the CPU training plan's step) each weight is cast once."""
import torch

from vsr_engine.ops import dwpw_conv2d
from vsr_engine.ops._autocast import autocast_inputs, weight_cast_cache
from vsr_engine.training.common import _bf16_step


def _layer(seed=0, c=4, o=4):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(c, 1, 3, 3, generator=g), torch.randn(c, generator=g), torch.randn(o, c, 1, 1, generator=g),
          torch.randn(o, generator=g)]
    return [w.requires_grad_() for w in ws]


def test_casts_and_gradients():
    w = torch.randn(3, requires_grad=True)
    x = torch.randn(3)
    assert autocast_inputs(w, x) == (w, x)                         # outside autocast: unchanged
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cw, cx = autocast_inputs(w, x)
    assert cw.dtype == cx.dtype == torch.bfloat16
    cw.float().sum().backward()
    assert w.grad is not None and w.grad.dtype == torch.float32


def test_weight_cast_cache_casts_each_weight_once_per_region():
    w = torch.randn(5, requires_grad=True)
    act = torch.randn(5)                                            # not a weight: cast on every call
    with torch.autocast("cpu", dtype=torch.bfloat16), weight_cast_cache():
        a, xa = autocast_inputs(w, act)
        b, xb = autocast_inputs(w, act)
        assert a is b and xa is not xb
        with torch.no_grad():                                       # another grad mode: its own cast
            c, = autocast_inputs(w)
        assert c is not a and c.grad_fn is None
        with torch.no_grad():
            w.add_(1.0)                                             # an in-place update: the cast is stale
        d, = autocast_inputs(w)
        assert d is not a and torch.equal(d, (w.detach()).to(torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16), weight_cast_cache():
        e, = autocast_inputs(w)                                     # a new region: a new cast
    assert e is not d


def test_recurrent_layer_gradients_same_with_and_without_the_cache():
    """A layer called once per frame (as DSCVSR's): the cached weight casts give the same outputs and the same
    fp32 weight gradients as a cast per call (only the order of the bf16 gradient sum may differ)."""
    xs = [torch.randn(2, 4, 5, 6, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    runs = []
    for ctx in (_bf16_step, lambda: torch.autocast("cpu", dtype=torch.bfloat16)):
        ws = _layer()
        with ctx():
            h = xs[0]
            for x in xs[1:]:
                h = dwpw_conv2d(h + x, *ws, activation="relu")
        h.float().sum().backward()
        runs.append((h.detach(), [w.grad.clone() for w in ws]))
    assert torch.equal(runs[0][0], runs[1][0])
    for a, b in zip(runs[0][1], runs[1][1]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2 * float(b.abs().max()))
