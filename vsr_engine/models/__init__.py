"""Model registry: ``load_model(name, weights=None, variant=None, **arch_kwargs)``."""
from __future__ import annotations

import os
from typing import Dict, Optional, Union

import torch.nn as nn

from .. import checkpoint as ckpt
from .. import weights as W
from .basicvsr import BasicVSR, SpyNet
from .dscvsr import DSCVSR
from .realbasicvsr import RealBasicVSR
from .basicvsr_meta import BasicVSRMeta
from .usrda import USRDA
from .resample import ResampledBasicVSR, ResampledRealBasicVSR, check_any_scale


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


def _usrda_arch(sd) -> Dict[str, int]:
    return {"num_feat": int(sd["encoder.head.weight"].shape[0]), "enc_blocks": ckpt.count_indexed(sd, "encoder.body"),
            "dec_blocks": ckpt.count_indexed(sd, "decoder.body")}


# name -> (constructor, arch inference from a (renamed) state dict)
MODELS: Dict[str, tuple] = {
    "basicvsr": (BasicVSR, _basicvsr_arch),
    "realbasicvsr": (RealBasicVSR, _realbasicvsr_arch),
    "dscvsr": (DSCVSR, _dscvsr_arch),
    "basicvsr-meta": (BasicVSRMeta, _basicvsr_arch),
    "usrda": (USRDA, _usrda_arch),
}
# fixed-x4 models built for another scale: their x4 output is resampled on the device (models/resample.py)
RESAMPLED = {"basicvsr": ResampledBasicVSR, "realbasicvsr": ResampledRealBasicVSR}


FIXED_X4 = ("basicvsr", "realbasicvsr")


def check_scale(name: str, scale) -> float:
    """The scale as a float, or ValueError: every model takes any r in [1, 16] (x4 models resample their output)."""
    return check_any_scale(scale, name)


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
    if name in FIXED_X4:
        sc = arch_kwargs.pop("scale", None)
        if sc is not None and check_any_scale(sc, name) != 4.0:
            cls = RESAMPLED[name]
            arch_kwargs["scale"] = check_any_scale(sc, name)
    if name == "basicvsr-meta":
        return _load_meta(weights, variant, arch_kwargs)
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


def _load_meta(weights, variant, arch_kwargs) -> nn.Module:
    """basicvsr-meta: official BasicVSR backbone (``variant``, default vimeo-bi) + the scale head
    (``weights=`` a head checkpoint, default the bundled one; ``False``: random backbone, zero head)."""
    if weights is False:
        return BasicVSRMeta(**arch_kwargs).eval()
    backbone = W.resolve("basicvsr", variant or "vimeo-bi")
    sd, layout = ckpt.prepare_state_dict(backbone)
    found = ckpt.guess_model(sd)
    if found and found != "basicvsr":
        raise ckpt.CheckpointError(f"{backbone} is a {found} checkpoint, not basicvsr ({layout})")
    head_path = W.resolve("basicvsr-meta", "vimeo-bi", None if weights is None else os.fspath(weights))
    head = ckpt.read_checkpoint(head_path)
    head = {k[len("head."):] if k.startswith("head.") else k: v for k, v in dict(head).items()}
    try:
        hk = {"head_mid": int(head["conv.weight"].shape[0]), "head_hidden": int(head["fc1.weight"].shape[0]),
              "head_kernel": int(round((head["fc2.weight"].shape[0] // (3 * head["conv.weight"].shape[0])) ** 0.5))}
    except KeyError as e:
        raise ckpt.CheckpointError(f"{head_path} is not a basicvsr-meta head checkpoint: missing key {e}") from None
    model = BasicVSRMeta(**{**_basicvsr_arch(sd), **hk, **arch_kwargs})
    ckpt.load_state_dict_strict(model, {**sd, **{"head." + k: v.float() for k, v in head.items()}},
                                f"{backbone} + {head_path}", layout, "basicvsr-meta")
    model.weights_path = head_path
    model.backbone_path = backbone
    model.weights_layout = layout
    return model.eval()


__all__ = ["BasicVSRMeta", "ResampledBasicVSR", "ResampledRealBasicVSR", "check_any_scale", "BasicVSR", "RealBasicVSR", "DSCVSR", "check_scale", "SpyNet", "load_model", "build_model", "model_names", "MODELS",
           "UnknownModelError"]
