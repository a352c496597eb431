"""The small SR models STDO overfits (WDSR, EDSR-baseline): construction from a name + config, default sizes and
learning rates, and (de)serialisation of their fp16 weights for the bundle."""
from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
import torch.nn as nn

from ..models.edsr import EDSR
from ..models.wdsr import WDSR, fold_weight_norm

ARCHS = {"wdsr": WDSR, "edsr": EDSR}
# paper configurations (STDO code defaults / EDSR baseline)
PAPER_CONFIG = {"wdsr": dict(num_blocks=16, num_residual_units=32, width_multiplier=4),
                "edsr": dict(num_blocks=16, num_feats=64, res_scale=1.0)}
DEFAULT_LR = {"wdsr": 1e-3, "edsr": 1e-4}


def build(name: str, scale: int, config: Optional[Dict] = None) -> nn.Module:
    name = name.lower()
    if name not in ARCHS:
        raise ValueError(f"unknown STDO model {name!r}; choose from {sorted(ARCHS)}")
    cfg = dict(PAPER_CONFIG[name])
    cfg.update(config or {})
    cfg.pop("scale", None)
    return ARCHS[name](scale=scale, **cfg)


def arch_spec(model: nn.Module) -> Dict:
    name = {WDSR: "wdsr", EDSR: "edsr"}[type(model)]
    return {"name": name, "config": dict(model.config)}


def from_spec(spec: Dict) -> nn.Module:
    cfg = dict(spec["config"])
    return build(spec["name"], cfg.pop("scale"), cfg)


def fp16_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in model.state_dict().items()}


def load_for_inference(spec: Dict, state: Dict[str, torch.Tensor], device="cpu", dtype=torch.float32) -> nn.Module:
    """Strictly load an fp16 state dict into a fresh model, fold weight norm, move to device/dtype, eval mode."""
    m = from_spec(spec)
    m.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    fold_weight_norm(m)
    return m.to(device=device, dtype=dtype).eval()


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
