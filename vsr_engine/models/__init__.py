"""Model registry: ``load_model(name, weights=None, variant=None, **arch_kwargs)``."""
from __future__ import annotations

import os
import re
from typing import Callable, Dict, Optional, Union

import torch.nn as nn

from .. import checkpoint as ckpt
from .. import weights as W
from .basicvsr import BasicVSR, SpyNet
from .dscvsr import DSCVSR
from .realbasicvsr import RealBasicVSR


def _basicvsr_arch(sd) -> Dict[str, int]:
    return {"num_feat": int(sd["fusion.weight"].shape[0]), "num_block": ckpt.count_blocks(sd, "backward_trunk")}


def _realbasicvsr_arch(sd) -> Dict[str, int]:
    return {"num_feat": int(sd["basicvsr.fusion.weight"].shape[0]),
            "num_propagation_blocks": ckpt.count_blocks(sd, "basicvsr.backward_trunk"),
            "num_cleaning_blocks": ckpt.count_blocks(sd, "image_cleaning.0")}


def _count(sd, pattern: str) -> int:
    pat = re.compile(pattern)
    ks = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
    return max(ks) + 1 if ks else 0


def _dscvsr_arch(sd) -> Dict[str, int]:
    return {"num_feat": int(sd["fusion.weight"].shape[0]),
            "num_blocks": _count(sd, r"backward_rf\.blocks\.(\d+)\."),
            "num_layers": _count(sd, r"backward_rf\.blocks\.0\.layers\.(\d+)\."),
            "growth": int(sd["backward_rf.blocks.0.layers.0.pw.weight"].shape[0]),
            "filling_blocks": _count(sd, r"backward_fill\.body\.(\d+)\.")}


# name -> (constructor, arch inference from a (renamed) state dict)
MODELS: Dict[str, tuple] = {
    "basicvsr": (BasicVSR, _basicvsr_arch),
    "realbasicvsr": (RealBasicVSR, _realbasicvsr_arch),
    "dscvsr": (DSCVSR, _dscvsr_arch),
}


FIXED_X4 = ("basicvsr", "realbasicvsr")


class UnknownModelError(ValueError):
    pass


def model_names():
    return sorted(MODELS)


def build_model(name: str, **arch_kwargs) -> nn.Module:
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; choose from: {', '.join(model_names())}")
    return MODELS[name][0](**arch_kwargs)


def load_model(name: str, weights: Union[str, os.PathLike, None, bool] = None, variant: Optional[str] = None,
               **arch_kwargs) -> nn.Module:
    """Build ``name`` and load its weights strictly; returns the module in eval mode.

    ``weights``: a checkpoint path (BasicSR, mmagic/mmcv, bare, .safetensors), ``None`` for the official
    weights of ``variant`` (see ``vsr_engine.weights``), or ``False`` for random initialisation.
    Architecture sizes not given in ``arch_kwargs`` are read from the checkpoint. ``dscvsr`` takes
    ``scale=r`` (any r in [1, 4], default 4; ``model(x, scale=r)`` overrides it per call).
    """
    name = name.lower()
    if name not in MODELS:
        raise UnknownModelError(f"unknown model {name!r}; choose from: {', '.join(model_names())}")
    cls, infer = MODELS[name]
    if "scale" in arch_kwargs and name in FIXED_X4:
        sc = arch_kwargs.pop("scale")
        if sc is not None and float(sc) != 4.0:
            raise ValueError(f"{name} upscales x4 only (got scale={sc}); dscvsr takes any scale in [1.1, 4]")
    if weights is False:
        return cls(**arch_kwargs).eval()
    path = W.resolve(name, variant, None if weights is None else os.fspath(weights))
    sd, layout = ckpt.prepare_state_dict(path)
    found = ckpt.guess_model(sd)
    if found and found != name:
        raise ckpt.CheckpointError(f"{path} is a {found} checkpoint, not {name} ({layout})")
    try:
        arch = {**infer(sd), **arch_kwargs}
    except KeyError as e:
        raise ckpt.CheckpointError(f"{path} does not fit {name} ({layout}): missing key {e}") from None
    model = cls(**arch)
    ckpt.load_state_dict_strict(model, sd, path, layout, name)
    model.weights_path = path
    model.weights_layout = layout
    return model.eval()


__all__ = ["BasicVSR", "RealBasicVSR", "DSCVSR", "SpyNet", "load_model", "build_model", "model_names", "MODELS",
           "UnknownModelError"]
