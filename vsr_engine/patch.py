"""``vsr_engine.patch(model)`` / ``vsr_engine.unpatch(model)``: put the vsr_engine ops into an existing model.

What ``patch`` swaps, in place:
  * every ``nn.PixelShuffle`` -> ``PixelShuffle`` (same class family, calls ``ops.pixel_shuffle``);
  * inside an ``nn.Sequential``, a depthwise conv (groups == in == out channels, odd square kernel, stride 1,
    padding k//2, zero padding) directly followed by a 1x1 conv (stride 1, no groups), optionally followed by
    ``nn.ReLU`` or ``nn.LeakyReLU(0.1)`` -> one ``DepthwisePointwise`` module calling ``ops.dwpw_conv2d``; the
    pointwise conv's (and activation's) slot becomes a ``FusedAway`` placeholder;
  * module-level ``flow_warp`` functions: for every module class in the model (and its base classes), a global
    named ``flow_warp`` in the module that defines the class (BasicSR's ``basicvsr_arch``, ``spynet_arch``,
    mmagic's editors, ...) is replaced by ``ops.flow_warp`` (same signature, BasicSR's and mmagic's keywords).
    This changes that Python module for every model using it until the last patched model is unpatched.
    A global named ``deform_conv2d`` (``from torchvision.ops import deform_conv2d``) is replaced by
    ``ops.deform_conv2d`` the same way;
  * every module whose class is exactly ``DeformConv2d`` (torchvision.ops, mmcv.ops) or ``ModulatedDeformConv2d``
    (mmcv.ops) -> ``DeformConv`` calling ``ops.deform_conv2d`` with its weight, bias, stride, padding, dilation
    (subclasses that compute their own offsets, mmcv's ``*Pack`` / mmagic's ``AugmentedDeformConv2dPack``, are left
    alone: their forward is not the plain one).

Parameters are shared, not copied, and keep their ``state_dict`` keys (the fused module registers the depthwise
conv's ``weight``/``bias``, the placeholder the pointwise conv's), so optimizers, checkpoints and ``.to()`` keep
working. ``unpatch`` restores the original module objects and functions exactly. The ops choose their backend
as usual (``vsr_engine.ops.set_backend``).
"""
from __future__ import annotations

import sys
from typing import Dict, List, Optional, Tuple

import torch.nn as nn

from . import ops

__all__ = ["patch", "unpatch", "PixelShuffle", "DepthwisePointwise", "FusedAway", "DeformConv"]


def _keep(module: nn.Module, name: str, value) -> None:
    """An attribute that is not registered as a submodule/parameter (so state_dict and parameters() ignore it)."""
    object.__setattr__(module, name, value)


class PixelShuffle(nn.PixelShuffle):
    """``nn.PixelShuffle`` running ``vsr_engine.ops.pixel_shuffle``."""

    def __init__(self, original: nn.PixelShuffle):
        super().__init__(original.upscale_factor)
        _keep(self, "_vsr_original", original)

    def forward(self, x):
        return ops.pixel_shuffle(x, self.upscale_factor)


def _act_name(m: nn.Module) -> Optional[str]:
    if type(m) is nn.ReLU:
        return "relu"
    if type(m) is nn.LeakyReLU and m.negative_slope == 0.1:
        return "lrelu"
    return None


class DepthwisePointwise(nn.Module):
    """A depthwise conv + 1x1 conv (+ activation) pair run as one ``ops.dwpw_conv2d``. Registers the depthwise
    conv's parameters as its own ``weight``/``bias``; the pointwise conv's stay registered in its ``FusedAway``."""

    def __init__(self, dw: nn.Conv2d, pw: nn.Conv2d, activation: Optional[str], act_module: Optional[nn.Module]):
        super().__init__()
        self.weight = dw.weight
        self.bias = dw.bias
        _keep(self, "_vsr_original", dw)
        _keep(self, "_vsr_pw", pw)
        _keep(self, "_vsr_act_module", act_module)
        self.activation = activation

    def forward(self, x):
        pw = self._vsr_pw
        return ops.dwpw_conv2d(x, self.weight, self.bias, pw.weight, pw.bias, activation=self.activation)

    def extra_repr(self) -> str:
        dw = self._vsr_original
        return (f"{dw.in_channels}, {self._vsr_pw.out_channels}, kernel_size={dw.kernel_size}, "
                f"activation={self.activation}")


class FusedAway(nn.Module):
    """Placeholder for a module whose work a preceding ``DepthwisePointwise`` does: identity in forward, holds the
    original's parameters under the original names."""

    def __init__(self, original: nn.Module):
        super().__init__()
        for name, p in original.named_parameters(recurse=False):
            self.register_parameter(name, p)
        _keep(self, "_vsr_original", original)

    def forward(self, x):
        return x


class DeformConv(nn.Module):
    """A torchvision / mmcv ``DeformConv2d`` or mmcv ``ModulatedDeformConv2d`` running ``ops.deform_conv2d``:
    forward(x, offset, mask=None), the original's parameters under their own names."""

    def __init__(self, original: nn.Module):
        super().__init__()
        for name, p in original.named_parameters(recurse=False):
            self.register_parameter(name, p)
        _keep(self, "_vsr_original", original)

    def forward(self, x, offset, mask=None):
        o = self._vsr_original
        return ops.deform_conv2d(x, offset, self.weight, getattr(self, "bias", None), _pair(o.stride),
                                 _pair(o.padding), _pair(o.dilation), mask)


_DEFORM_CLASSES = ("DeformConv2d", "ModulatedDeformConv2d")


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _is_deform(m: nn.Module) -> bool:
    return (type(m).__name__ in _DEFORM_CLASSES and isinstance(getattr(m, "weight", None), nn.Parameter)
            and m.weight.dim() == 4 and all(hasattr(m, a) for a in ("stride", "padding", "dilation")))


def _is_depthwise(m: nn.Module) -> bool:
    if type(m) is not nn.Conv2d:
        return False
    k = m.kernel_size
    return (m.groups == m.in_channels == m.out_channels and k[0] == k[1] and k[0] % 2 == 1
            and m.stride == (1, 1) and m.dilation == (1, 1) and m.padding == (k[0] // 2, k[0] // 2)
            and m.padding_mode == "zeros")


def _is_pointwise(m: nn.Module, channels: int) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
            and m.groups == 1 and m.in_channels == channels and m.padding_mode == "zeros"
            and m.dilation == (1, 1))


# (python module name, attribute) -> [original function, number of patched models using the swap]
_GLOBALS: Dict[Tuple[str, str], list] = {}


def _swap_globals(model: nn.Module) -> List[Tuple[str, str]]:
    done = []
    names = {cls.__module__ for m in model.modules() for cls in type(m).__mro__}
    for modname in sorted(names):
        pymod = sys.modules.get(modname)
        if pymod is None or modname.startswith(("torch.", "vsr_engine.ops")):
            continue
        for attr, ours in (("flow_warp", ops.flow_warp), ("deform_conv2d", ops.deform_conv2d)):
            fn = getattr(pymod, attr, None)
            key = (modname, attr)
            if key in _GLOBALS:
                _GLOBALS[key][1] += 1
                done.append(key)
            elif callable(fn) and fn is not ours:
                _GLOBALS[key] = [fn, 1]
                setattr(pymod, attr, ours)
                done.append(key)
    return done


def patch(model: nn.Module) -> nn.Module:
    """Swap in the vsr_engine ops (see the module docstring); returns ``model``. Idempotent."""
    if getattr(model, "_vsr_patch", None) is not None:
        return model
    counts = {"pixel_shuffle": 0, "dwpw_conv2d": 0, "deform_conv2d": 0, "flow_warp_globals": 0}
    for parent in list(model.modules()):
        if isinstance(parent, (PixelShuffle, DepthwisePointwise, FusedAway, DeformConv)):
            continue
        items = list(parent._modules.items())
        fused_from = -1
        for i, (name, child) in enumerate(items):
            if type(child) is nn.PixelShuffle:
                parent._modules[name] = PixelShuffle(child)
                counts["pixel_shuffle"] += 1
            if _is_deform(child):
                parent._modules[name] = DeformConv(child)
                counts["deform_conv2d"] += 1
            if not isinstance(parent, nn.Sequential) or i <= fused_from or not _is_depthwise(child):
                continue
            if i + 1 < len(items) and _is_pointwise(items[i + 1][1], child.out_channels):
                pw_name, pw = items[i + 1]
                act_name, act_mod = None, None
                if i + 2 < len(items) and _act_name(items[i + 2][1]) is not None:
                    act_name, act_mod = _act_name(items[i + 2][1]), items[i + 2][1]
                parent._modules[name] = DepthwisePointwise(child, pw, act_name, act_mod)
                parent._modules[pw_name] = FusedAway(pw)
                if act_mod is not None:
                    parent._modules[items[i + 2][0]] = FusedAway(act_mod)
                fused_from = i + (2 if act_mod is not None else 1)
                counts["dwpw_conv2d"] += 1
    swapped = _swap_globals(model)
    counts["flow_warp_globals"] = len(swapped)
    _keep(model, "_vsr_patch", {"globals": swapped, "counts": counts})
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Undo ``patch``: the original module objects and module-level functions come back."""
    state = getattr(model, "_vsr_patch", None)
    for parent in list(model.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, (PixelShuffle, DepthwisePointwise, FusedAway, DeformConv)):
                parent._modules[name] = child._vsr_original
    if state is not None:
        for key in state["globals"]:
            entry = _GLOBALS.get(key)
            if entry is None:
                continue
            entry[1] -= 1
            if entry[1] == 0:
                pymod = sys.modules.get(key[0])
                if pymod is not None:
                    setattr(pymod, key[1], entry[0])
                del _GLOBALS[key]
        object.__delattr__(model, "_vsr_patch")
    return model


def patch_report(model: nn.Module) -> Optional[dict]:
    """What ``patch`` replaced in ``model`` (None if not patched)."""
    state = getattr(model, "_vsr_patch", None)
    return None if state is None else dict(state["counts"], globals=list(state["globals"]))
