"""USR-DA's SR path: with the method's G_SR (``--no-lr-skip``) the output is a function of the encoder's features alone
(with the default bilinear LR skip it is not), and checkpoints say which G_SR they hold. Tiny sizes, CPU, no data."""
import argparse

import torch
from safetensors.torch import save_file

from vsr_engine import load_model
from vsr_engine.models.usrda import USRDA
from vsr_engine.training import adapt

torch.set_num_threads(1)


class _Const(torch.nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f.expand(x.shape[0], -1, -1, -1)


def _recipe_model(*extra):
    ap = argparse.ArgumentParser()
    adapt.add_arguments(ap)
    a = ap.parse_args(["target.mp4", "--num-feat", "8", "--enc-blocks", "1", "--dec-blocks", "1", *extra])
    return adapt.make_model(a)


def test_no_lr_skip_sr_output_depends_on_features_only():
    # two different inputs with the same features must give the same SR: the target's degradation that the feature
    # alignment removes cannot reach the output through a side path (the bilinear LR skip did exactly that)
    torch.manual_seed(0)
    x1, x2 = torch.rand(1, 1, 3, 6, 6), torch.rand(1, 1, 3, 6, 6)
    f = torch.randn(1, 8, 6, 6)
    m, skip = _recipe_model("--no-lr-skip").eval(), _recipe_model().eval()
    m.encoder, skip.encoder = _Const(f), _Const(f)
    with torch.no_grad():
        assert torch.equal(m(x1), m(x2))
        assert not torch.allclose(skip(x1), skip(x2))


def test_checkpoints_keep_their_lr_skip(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(1, 2, 3, 6, 6)
    for skip in (False, True):
        m = USRDA(8, 1, 1, lr_skip=skip).eval()
        p = str(tmp_path / f"{skip}.safetensors")
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, p, metadata={"model": "usrda"})
        r = load_model("usrda", weights=p)
        assert r.decoder.lr_skip is skip
        with torch.no_grad():
            assert torch.allclose(r(x), m(x), atol=1e-6)
