"""Model registry: ``load_model(name, weights=None, variant=None, **arch_kwargs)``."""
from __future__ import annotations

import os
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


def _dscvsr_arch(sd) -> Dict[str, int]:
    return {"num_feat": int(sd["fusion.weight"].shape[0]),
            "num_blocks": ckpt.count_indexed(sd, "backward_rf.blocks"),
            "num_layers": ckpt.count_indexed(sd, "backward_rf.blocks.0.layers"),
            "growth": int(sd["backward_rf.blocks.0.layers.0.pw.weight"].shape[0]),
            "filling_blocks": ckpt.count_indexed(sd, "backward_fill.body")}


# name -> (constructor, arch inference from a (renamed) state dict)
MODELS: Dict[str, tuple] = {
    "basicvsr": (BasicVSR, _basicvsr_arch),
    "realbasicvsr": (RealBasicVSR, _realbasicvsr_arch),
    "dscvsr": (DSCVSR, _dscvsr_arch),
}


FIXED_X4 = ("basicvsr", "realbasicvsr")


def check_scale(name: str, scale) -> float:
    """The scale ``name`` can produce, or ValueError: x4 models take only 4, dscvsr any r in [1, 4]."""
    if name in FIXED_X4:
        if float(scale) != 4.0:
            raise ValueError(f"{name} upscales x4 only (got scale={scale:g}); dscvsr takes any scale in [1.1, 4]")
        return 4.0
    return DSCVSR.check_scale(scale)


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
        if sc is not None:
            check_scale(name, sc)
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


__all__ = ["BasicVSR", "RealBasicVSR", "DSCVSR", "check_scale", "SpyNet", "load_model", "build_model", "model_names", "MODELS",
           "UnknownModelError"]
