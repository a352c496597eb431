"""Read published checkpoints as they are, recognise their layout from their content, load strictly.

Layouts accepted:
- BasicSR: ``{'params': state_dict}`` (or ``params_ema``), BasicSR names.
- mmagic / mmcv: ``{'meta': ..., 'state_dict': {'generator.*', 'generator_ema.*', 'discriminator.*',
  'step_counter'}}``, mmagic names. The EMA generator is used when present, as the official test path does.
- A bare state dict in either naming; ``.safetensors`` files; DataParallel ``module.`` prefixes.
"""
from __future__ import annotations

import os
import pickle
import re
from typing import Dict, Mapping, Tuple

import torch
import torch.nn as nn


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint for the requested model."""


def read_checkpoint(path: str | os.PathLike) -> Mapping:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CheckpointError(f"weights file not found: {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"weights path is a directory, not a checkpoint file: {path}")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"weights file is empty (0 bytes): {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path, device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise _unreadable(path, e) from None
        sd = read_module_pickle(path)   # a whole pickled module (e.g. the official TDAN model.pt)
        if sd:
            return sd
        raise CheckpointError(f"{path} is a pickled Python object, not a state dict, and holds no module "
                              "tensors vsr_engine can read without running its code; convert it where it was "
                              "made: torch.save(torch.load(PATH).state_dict(), 'state_dict.pth')") from None
    except Exception as e:  # torch raises many kinds for damaged files
        raise _unreadable(path, e) from None


def _unreadable(path: str, e: Exception) -> CheckpointError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return CheckpointError(f"cannot read {path} as a checkpoint (truncated or not a PyTorch/safetensors "
                           f"file?): {first[:200]}")


# --- whole-module pickles (old PyTorch ``torch.save(model)``), read without executing their code -----------
class _Stub:
    """Stand-in for every class or function a module pickle names: keeps arguments and state, runs nothing."""
    _name = "?"

    def __init__(self, *args, **kwargs):
        self._args = args

    def __setstate__(self, state):
        self._state = state


_SAFE_BUILTINS = {"set", "frozenset", "tuple", "list", "dict", "slice", "complex", "bytearray", "int", "float",
                  "bool", "str", "bytes"}
_SAFE_TORCH = {("torch._utils", "_rebuild_tensor"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
               ("torch", "Size"), ("torch", "device"), ("collections", "OrderedDict")}


class _RestrictedUnpickler(pickle.Unpickler):
    _stubs: Dict[str, type] = {}

    def find_class(self, module, name):
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if (module, name) in _SAFE_TORCH:
            return getattr(__import__(module, fromlist=[name]), name)
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        key = f"{module}.{name}"
        if key not in self._stubs:
            self._stubs[key] = type(name, (_Stub,), {"_name": key})
        return self._stubs[key]


def _restricted_pickle_module():
    import types
    mod = types.ModuleType("vsr_engine_restricted_pickle")
    mod.Unpickler = _RestrictedUnpickler
    mod.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()
    mod.__name__ = "vsr_engine_restricted_pickle"
    return mod


def _collect_tensors(obj, prefix: str, out: Dict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > 64:
        return
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj.detach()
    elif isinstance(obj, _Stub):
        st = getattr(obj, "_state", None)
        if isinstance(st, tuple) and len(st) == 2 and isinstance(st[0], dict):
            st = st[0]
        if isinstance(st, dict) and ("_parameters" in st or "_modules" in st):
            for key in ("_parameters", "_buffers", "_modules"):
                for n, v in (st.get(key) or {}).items():
                    if v is not None:
                        _collect_tensors(v, f"{prefix}{n}.", out, depth + 1)
        else:   # an old Parameter / Variable stand-in: its data is the first tensor argument
            t = next((a for a in getattr(obj, "_args", ()) if isinstance(a, torch.Tensor)), None)
            if t is not None:
                out[prefix.rstrip(".")] = t.detach()
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(k, str):
                _collect_tensors(v, f"{prefix}{k}.", out, depth + 1)


def read_module_pickle(path: str) -> Dict[str, torch.Tensor]:
    """Parameters and buffers (state-dict names) of a whole pickled ``nn.Module`` (zip or legacy format, any
    PyTorch), read with every class replaced by an inert stand-in: no code from the file runs. {} if none."""
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # legacy files: "couldn't retrieve source code for container ..."
            obj = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle_module(), weights_only=False)
    except Exception:
        return {}
    out: Dict[str, torch.Tensor] = {}
    _collect_tensors(obj, "", out)
    return out


def extract_state_dict(ckpt: Mapping, prefer_ema: bool = True) -> Tuple[Dict[str, torch.Tensor], str]:
    """Unwrap a checkpoint container; returns (state_dict, description of the layout found)."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(ckpt).__name__}, not a dict of tensors")
    if "params" in ckpt or "params_ema" in ckpt:
        key = "params" if "params" in ckpt else "params_ema"
        sd, layout = ckpt[key], f"BasicSR ['{key}']"
    elif "state_dict" in ckpt and isinstance(ckpt["state_dict"], Mapping):
        sd, layout = ckpt["state_dict"], "mmcv ['state_dict']"
    elif "model_state_dict" in ckpt and isinstance(ckpt["model_state_dict"], Mapping):
        sd, layout = ckpt["model_state_dict"], "['model_state_dict']"
    else:
        sd, layout = ckpt, "bare state dict"
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"checkpoint ({layout}) holds no tensors")
    # generator / generator_ema / discriminator prefixes (mmagic GAN wrappers)
    prefixes = {k.split(".", 1)[0] for k in sd if "." in k}
    for want in (("generator_ema", "generator") if prefer_ema else ("generator", "generator_ema")):
        if want in prefixes:
            sd = {k[len(want) + 1:]: v for k, v in sd.items() if k.startswith(want + ".")}
            layout += f", '{want}.' weights"
            break
    # DataParallel / wrapper prefixes
    for p in ("module.", "model."):
        if sd and all(k.startswith(p) for k in sd):
            sd = {k[len(p):]: v for k, v in sd.items()}
    return sd, layout


_MM_TO_BSR = [
    (re.compile(r"(^|\.)spynet\.basic_module\.(\d+)\.basic_module\.(\d+)\.conv\.(weight|bias)$"),
     lambda m: f"{m.group(1)}spynet.basic_module.{m.group(2)}.basic_module.{2 * int(m.group(3))}.{m.group(4)}"),
    (re.compile(r"(^|\.)backward_resblocks\."), lambda m: f"{m.group(1)}backward_trunk."),
    (re.compile(r"(^|\.)forward_resblocks\."), lambda m: f"{m.group(1)}forward_trunk."),
    (re.compile(r"(^|\.)upsample([12])\.upsample_conv\."), lambda m: f"{m.group(1)}upconv{m.group(2)}."),
]


def is_mmagic_naming(sd: Mapping[str, torch.Tensor]) -> bool:
    return any(p.search(k) for k in sd for p, _ in _MM_TO_BSR)


def mmagic_to_basicsr(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pat, rep in _MM_TO_BSR:
            k = pat.sub(rep, k)
        out[k] = v
    return out


def basicsr_to_mmagic(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Inverse renaming (used to write mmagic-layout test checkpoints and for export)."""
    out = {}
    for k, v in sd.items():
        k = re.sub(r"(^|\.)spynet\.basic_module\.(\d+)\.basic_module\.(\d+)\.(weight|bias)$",
                   lambda m: f"{m.group(1)}spynet.basic_module.{m.group(2)}.basic_module.{int(m.group(3)) // 2}.conv.{m.group(4)}", k)
        k = re.sub(r"(^|\.)backward_trunk\.", r"\1backward_resblocks.", k)
        k = re.sub(r"(^|\.)forward_trunk\.", r"\1forward_resblocks.", k)
        k = re.sub(r"(^|\.)upconv([12])\.", r"\1upsample\2.upsample_conv.", k)
        out[k] = v
    return out


def describe_keys(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    s = ", ".join(keys[:limit])
    return s + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def prepare_state_dict(path: str | os.PathLike) -> Tuple[Dict[str, torch.Tensor], str]:
    """Read, unwrap and rename a checkpoint to vsr_engine's (BasicSR) parameter names."""
    sd, layout = extract_state_dict(read_checkpoint(path))
    if is_mmagic_naming(sd):
        sd = mmagic_to_basicsr(sd)
        layout += ", mmagic names"
    sd.pop("step_counter", None)
    from .models.tdan import is_official as _tdan_official, official_to_mmagic as _tdan_rename
    if _tdan_official(sd):
        sd = _tdan_rename(sd)
        layout += ", official TDAN names"
    return sd, layout


def load_state_dict_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str, layout: str,
                           model_name: str = "model") -> None:
    """Strict load; raises one CheckpointError naming what is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    shape_bad = [f"{k} {tuple(sd[k].shape)} (model wants {tuple(own[k].shape)})"
                 for k in set(own) & set(sd) if sd[k].shape != own[k].shape]
    if missing or unexpected or shape_bad:
        hint = guess_model(sd)
        parts = [f"{source} does not fit {model_name} ({layout})"]
        if hint and hint != model_name:
            parts.append(f"it looks like a {hint} checkpoint")
        if missing:
            parts.append(f"missing {len(missing)} keys: {describe_keys(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys: {describe_keys(unexpected)}")
        if shape_bad:
            parts.append(f"{len(shape_bad)} shape mismatches: {'; '.join(sorted(shape_bad)[:3])}")
        raise CheckpointError("; ".join(parts))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_into(model: nn.Module, path: str | os.PathLike, model_name: str = "model") -> str:
    """Load ``path`` into ``model`` strictly; returns the layout found."""
    sd, layout = prepare_state_dict(path)
    load_state_dict_strict(model, sd, os.fspath(path), layout, model_name)
    return layout


def guess_model(sd: Mapping[str, torch.Tensor]) -> str:
    """Best guess of which vsr_engine model a (renamed) state dict belongs to."""
    keys = set(sd)
    if any(k.startswith("image_cleaning.") for k in keys) and any(k.startswith("basicvsr.") for k in keys):
        return "realbasicvsr"
    if any(k.startswith("backward_trunk.") for k in keys) and "conv_last.weight" in keys:
        return "basicvsr"
    if any(k.startswith("backward_rf.") for k in keys) and any(k.startswith("upscale.fc2.") for k in keys):
        return "dscvsr"
    if "dense.0.bn_a.weight" in keys and "fconv2.weight" in keys:
        return "duf"
    if "align_1.conv_offset.weight" in keys and any(k.startswith("feat_aggregate.") for k in keys):
        return "tdan"
    if "encoder.head.weight" in keys and "decoder.last.weight" in keys:
        return "usrda"
    return ""


def count_indexed(sd: Mapping[str, torch.Tensor], prefix: str) -> int:
    """Number of numbered children ``<prefix>.<k>.`` (max k + 1; 0 if none)."""
    pat = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    ks = {int(m.group(1)) for k in sd for m in [pat.match(k)] if m}
    return max(ks) + 1 if ks else 0


def count_blocks(sd: Mapping[str, torch.Tensor], trunk_prefix: str) -> int:
    """Number of residual blocks under ``<trunk_prefix>.main.2.<k>.`` (0 if none)."""
    return count_indexed(sd, trunk_prefix + ".main.2")
