"""DSCVSR groundwork (issue 7 is not finished: no trained weights yet): sizes, training steps, export."""
import pytest
import torch

from vsr_engine.models.dscvsr import DSCVSR
from vsr_engine.ops.meta_upscale import meta_out_size
from vsr_engine.train import charbonnier, export_weights


def tiny():
    return DSCVSR(num_feat=8, num_blocks=1, num_layers=2, growth=4, filling_blocks=1)


@pytest.mark.parametrize("r", [1.1, 2.0, 2.5, 2.3, 4.0])
def test_output_size(r):
    m = tiny().eval()
    x = torch.rand(1, 3, 3, 7, 9)
    with torch.no_grad():
        y = m(x, r)
    assert y.shape == (1, 3, 3, *meta_out_size(7, 9, r))
    with pytest.raises(ValueError):
        m(x, 4.5)


def test_few_steps_lower_the_loss_and_export_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = tiny()
    m.spynet.requires_grad_(False)
    x = torch.rand(1, 2, 3, 6, 6)
    target = torch.nn.functional.interpolate(x[0], size=(15, 15), mode="bicubic", align_corners=False)[None].clamp(0, 1)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(6):
        loss = charbonnier(m(x, 2.5), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    p = str(tmp_path / "d.safetensors")
    export_weights(m, {"num_feat": 8}, p)
    from safetensors.torch import load_file
    sd = load_file(p)
    for k, v in m.state_dict().items():
        assert torch.equal(sd[k], v.half()), k
