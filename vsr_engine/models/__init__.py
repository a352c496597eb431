"""Model registry: ``load_model(name, weights=None, variant=None, **arch_kwargs)``."""
from __future__ import annotations

import os
from typing import Dict, Optional, Union

import torch.nn as nn

from .. import checkpoint as ckpt
from .. import weights as W
from .basicvsr import BasicVSR, SpyNet
from .dscvsr import DSCVSR
from .duf import DUF
from .realbasicvsr import RealBasicVSR
from .basicvsr_meta import BasicVSRMeta
from .usrda import USRDA
from .resample import ResampledBasicVSR, ResampledRealBasicVSR, check_any_scale
from .tdan import TDAN, arch_from_state_dict as _tdan_arch


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
            "dec_blocks": ckpt.count_indexed(sd, "decoder.body"), "lr_skip": "decoder.no_lr_skip" not in sd}


# name -> (constructor, arch inference from a (renamed) state dict)
MODELS: Dict[str, tuple] = {
    "basicvsr": (BasicVSR, _basicvsr_arch),
    "realbasicvsr": (RealBasicVSR, _realbasicvsr_arch),
    "dscvsr": (DSCVSR, _dscvsr_arch),
    "basicvsr-meta": (BasicVSRMeta, _basicvsr_arch),
    "duf": (DUF, None),   # loaded by _load_duf (official HDF5 or a state dict); also named duf-16l/-28l/-52l
    "tdan": (TDAN, _tdan_arch),
    "usrda": (USRDA, _usrda_arch),
}
# fixed-x4 models built for another scale: their x4 output is resampled on the device (models/resample.py)
RESAMPLED = {"basicvsr": ResampledBasicVSR, "realbasicvsr": ResampledRealBasicVSR, "tdan": TDAN}


FIXED_X4 = ("basicvsr", "realbasicvsr", "tdan")


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
    if name.startswith("duf-") or name == "duf":
        return _load_duf(name, weights, variant, arch_kwargs)
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


def _load_duf(name: str, weights, variant, arch_kwargs) -> nn.Module:
    """DUF: ``variant`` 16L / 28L / 52L (or ``duf-16l`` as the name; "16L-x4" also accepted), ``scale`` 2, 3, 4
    (native; official weights: 16L x2/x3/x4, 28L and 52L x4) or any r in [1, 16] (the nearest native factor above,
    resampled). ``weights``: the official ``params_*.h5`` or a torch state dict / safetensors of ``DUF``; None: the
    official file from the cache, else (16L x4) the bundled weights trained here; False: random init."""
    from .duf import DUF as _DUF, NATIVE_SCALES, arch_of, native_scale, parse_variant, read_official_h5
    from .duf import HDF5_MAGIC
    if name != "duf":
        if variant and parse_variant(str(variant).split("-")[0]) != parse_variant(name[4:]):
            raise ValueError(f"model {name} with variant {variant!r}: they disagree")
        variant = name[4:]
    v = parse_variant(str(variant or "16L").split("-")[0])
    scale = check_any_scale(arch_kwargs.pop("scale", 4), "duf")
    uf = native_scale(scale) if v == "16L" else 4
    if weights is False:
        return _DUF(v, scale, uf=uf, **arch_kwargs).eval()
    path = W.resolve("duf", f"{v}-x{uf}", None if weights is None else os.fspath(weights))
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ckpt.CheckpointError(f"cannot read {path}: {e}") from None
    if head == HDF5_MAGIC:
        sd, layout = read_official_h5(path)
    else:
        sd, layout = ckpt.prepare_state_dict(path)
        found = ckpt.guess_model(sd)
        if found and found != "duf":
            raise ckpt.CheckpointError(f"{path} is a {found} checkpoint, not duf ({layout})")
    fv, fuf = arch_of(sd)
    if variant is not None and fv != v:
        raise ckpt.CheckpointError(f"{path} holds DUF-{fv} weights, not DUF-{v} ({layout})")
    if weights is None and fuf != uf:
        raise ckpt.CheckpointError(f"{path} holds DUF x{fuf} weights, expected x{uf} ({layout})")
    model = _DUF(fv, scale, uf=fuf, **arch_kwargs)
    ckpt.load_state_dict_strict(model, sd, path, layout, f"duf ({fv} x{fuf})")
    model.weights_path = path
    if os.path.basename(path).startswith("duf_16L_x4_here"):
        layout += "; DUF-16L x4 trained here on a CPU, NOT the official weights"
    elif head == HDF5_MAGIC:
        layout += f"; official DUF-{fv} x{fuf}"
    model.weights_layout = layout
    assert fuf in NATIVE_SCALES
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


__all__ = ["BasicVSRMeta", "ResampledBasicVSR", "ResampledRealBasicVSR", "check_any_scale", "BasicVSR", "RealBasicVSR",
           "DSCVSR", "check_scale", "SpyNet", "DUF", "TDAN", "load_model", "build_model", "model_names", "MODELS",
           "UnknownModelError"]
