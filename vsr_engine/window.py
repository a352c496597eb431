"""Window processors: how one window of frames is stepped through a model.

Interface (kept stable: memory-aware wrappers plug in here): ``reset()``, ``state()`` / ``load_state(st, device,
dtype)`` (what the next window depends on), ``left_context()`` (frames of left context the processor wants), and
``process(x, s, n_emit, left)``: ``x`` (1, L, 3, h, w) frames ``s - left .. ``, yields ``(index, (3, sH, sW))`` for
frames ``s .. s + n_emit - 1``, one at a time.

* :class:`SplitBidirectional` -- BasicVSR-style models (BasicVSR, RealBasicVSR, DSCVSR) run split: the forward
  branch carries its hidden state exactly from window to window, the backward branch starts ``overlap`` frames
  after the window; flows (and the flow cache) stay on the device in SPyNet's dtype.
* :class:`BlackBox` -- any (N, T, 3, H, W) -> (N, T, 3, sH, sW) module with symmetric context.
* :class:`SlidingWindow` -- sliding-window models (DUF): output t from frames t-R .. t+R, exact at any window.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, Optional, Tuple

import torch
import torch.nn as nn

from .io.common import VsrError

__all__ = ["unwrap", "SplitBidirectional", "BlackBox", "SlidingWindow", "is_sliding", "pad_time", "keep_fp32"]


def unwrap(model: nn.Module):
    """(bidirectional core, cleaner or None) for BasicVSR-like models, else (None, None)."""
    from .models.basicvsr import BasicVSR
    from .models.dscvsr import DSCVSR
    from .models.realbasicvsr import RealBasicVSR
    if isinstance(model, DSCVSR):
        return model, None
    if isinstance(model, RealBasicVSR):
        return model.basicvsr, model
    if isinstance(model, BasicVSR):
        return model, None
    need = ("spynet", "propagate", "upsample", "backward_trunk", "forward_trunk", "num_feat")
    if all(hasattr(model, a) for a in need):
        return model, None
    return None, None


class SplitBidirectional:
    """BasicVSR-style model run window by window: exact carried forward state, lookahead-limited backward."""

    def __init__(self, core, cleaner=None, max_flow_cache: int = 64, fast=None):
        self.core = core
        self.cleaner = cleaner
        self.fast = fast  # a vsr_engine.fast.FastBasicVSR of ``core``: same function, channels-last + CUDA graphs
        self.feat_f: Optional[torch.Tensor] = None   # forward feature of the last emitted frame
        self.prev_x: Optional[torch.Tensor] = None   # its (cleaned) input frame (1, 3, h, w)
        self.flow_cache: "OrderedDict[int, torch.Tensor]" = OrderedDict()  # backward flow of pair (i, i+1)
        self.max_flow_cache = max_flow_cache

    def reset(self):
        self.feat_f = self.prev_x = None
        self.flow_cache.clear()

    def state(self) -> Optional[dict]:
        """Everything the next window depends on (so a resumed run is identical to an uninterrupted one)."""
        if self.feat_f is None:
            return None
        st = {"feat_f": self.feat_f, "prev_x": self.prev_x}
        if self.flow_cache:
            keys = sorted(self.flow_cache)
            st["flow_index"] = torch.tensor(keys, dtype=torch.int64)
            st["flows"] = torch.cat([self.flow_cache[k] for k in keys])
        return st

    def load_state(self, st: dict, device, dtype):
        self.feat_f = st["feat_f"].to(device, self.fast.feat_dtype if self.fast is not None else dtype)
        self.prev_x = st["prev_x"].to(device, dtype)
        self.flow_cache.clear()
        if "flows" in st:
            fdt = _flow_dtype(self.core, dtype)
            for k, f in zip(st["flow_index"].tolist(), st["flows"]):
                self.flow_cache[int(k)] = f.unsqueeze(0).to(device, fdt)

    def left_context(self) -> int:
        return 0

    def process(self, x: torch.Tensor, s: int, n_emit: int, left: int = 0) -> Iterator[Tuple[int, torch.Tensor]]:
        """``x``: (1, L, 3, h, w) frames ``s .. s+L-1``; yields ``(i, output (3, sH, sW))`` for frames
        ``s .. s+n_emit-1`` one at a time (so at most one output frame is alive)."""
        core = self.core
        L = x.shape[1]
        if self.cleaner is not None:
            x, _ = (self.fast.clean if self.fast is not None else self.cleaner.clean)(x)
        # backward flows of pairs (i, i+1), i in [s, s+L-1): reuse those computed as lookahead last time
        need = [i for i in range(s, s + L - 1) if i not in self.flow_cache]
        if need:
            a = torch.cat([x[:, i - s] for i in need])
            b = torch.cat([x[:, i - s + 1] for i in need])
            fl = self.fast.flows(a, b) if self.fast is not None else _spynet(core, a, b)
            for k, i in enumerate(need):
                self.flow_cache[i] = fl[k:k + 1]
        flows_b = (torch.stack([self.flow_cache[i][0] for i in range(s, s + L - 1)]).unsqueeze(0)
                   if L > 1 else None)
        dsc = hasattr(core, "backward_rf")  # DSCVSR: filling parity needs absolute indices, its own step/upsample
        if dsc:
            feats_b = core.propagate(x, flows_b, core.backward_rf, core.backward_fill, backward=True,
                                     first_index=s)[0][:n_emit]
        elif self.fast is not None:
            feats_b = self.fast.backward_feats(x, flows_b, n_emit)
        else:
            feats_b = core.propagate(x, flows_b, core.backward_trunk, backward=True)[:n_emit]
        for i in [k for k in self.flow_cache if k < s + n_emit]:
            del self.flow_cache[i]
        while len(self.flow_cache) > self.max_flow_cache:
            self.flow_cache.popitem(last=False)
        # forward flows (i -> i-1) for the emitted frames, the first one from the carried previous frame
        cur = [x[:, k] for k in range(n_emit)]
        prevs = ([self.prev_x] if self.prev_x is not None else []) + cur[:-1]
        tgt = cur if self.prev_x is not None else cur[1:]
        if tgt:
            a, b = torch.cat(tgt), torch.cat(prevs)
            flows_f = self.fast.flows(a, b) if self.fast is not None else _spynet(core, a, b)
        else:
            flows_f = None
        feat = self.feat_f
        off = 0 if self.prev_x is not None else 1
        for k in range(n_emit):
            flow = flows_f[k - off:k - off + 1] if feat is not None else None
            if dsc:
                feat = core.step(x[:, k], feat, flow, core.forward_rf, core.forward_fill, s + k)[0]
                out = core.reconstruct(x[:, k], feats_b[k], feat, core.scale)
            elif self.fast is not None:
                feat = self.fast.step(x[:, k], feat, flow, backward=False)
                out = self.fast.upsample(x[:, k], feats_b[k], feat)
            else:
                if feat is not None:
                    feat = _flow_warp(feat, flow)
                feat = core.propagate(x[:, k:k + 1], None, core.forward_trunk, backward=False, feat=feat)[0]
                out = core.upsample(x[:, k], feats_b[k], feat)
            feats_b[k] = None
            self.feat_f = feat
            self.prev_x = x[:, k]
            yield s + k, out[0]


def _flow_dtype(core, default: torch.dtype) -> torch.dtype:
    p = next(core.spynet.parameters(), None)
    return p.dtype if p is not None else default


def _spynet(core, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Flows from SPyNet in its own dtype (kept fp32 by ``keep_fp32`` when the rest runs in fp16/bf16)."""
    dt = _flow_dtype(core, a.dtype)
    return core.spynet(a.to(dt), b.to(dt))


def keep_fp32(model: nn.Module, dtype: torch.dtype, spynet_fp32: bool = True) -> nn.Module:
    """Cast ``model`` to ``dtype`` for the window step, keeping SPyNet (flow estimation) in fp32 when
    ``spynet_fp32``: flows and warp coordinates stay fp32 (``ops.flow_warp`` builds its grid in fp32 anyway)."""
    model = model.to(dtype=dtype)
    if dtype != torch.float32 and spynet_fp32:
        core, _ = unwrap(model)
        if core is not None and isinstance(getattr(core, "spynet", None), nn.Module):
            core.spynet.float()
    return model


def _flow_warp(feat: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    from . import ops
    return ops.flow_warp(feat, flow.permute(0, 2, 3, 1))


class _Stateless:
    """A window processor that carries nothing from one window to the next."""

    def reset(self):
        pass

    def state(self):
        return None

    def load_state(self, st, device, dtype):
        pass


class BlackBox(_Stateless):
    """Any (N, T, 3, H, W) -> (N, T, 3, sH, sW) module: symmetric context of ``overlap`` frames."""

    def __init__(self, model: nn.Module, overlap: int):
        self.model = model
        self.overlap = overlap

    def left_context(self) -> int:
        return self.overlap

    def process(self, x: torch.Tensor, s: int, n_emit: int, left: int = 0) -> Iterator[Tuple[int, torch.Tensor]]:
        y = self.model(x)
        if y.dim() != 5 or y.shape[1] != x.shape[1]:
            raise VsrError(f"model returned shape {tuple(y.shape)} for input {tuple(x.shape)}; expected "
                           "(N, T, 3, sH, sW)")
        for k in range(n_emit):
            yield s + k, y[0, left + k]


PAD_POLICIES = ("zeros", "replicate", "reflect")


def is_sliding(model: nn.Module) -> bool:
    """A sliding-window model: ``temporal_radius`` (int R >= 0), ``temporal_pad`` (its edge policy: "zeros",
    "replicate" or "reflect") and ``forward_window`` (N, 2R+1, 3, H, W) -> (N, 3, sH, sW) for the centre frame.
    A model with only ``temporal_radius`` (TDAN: its own edge rules) runs as a black box with ``overlap`` >= R."""
    return (getattr(model, "temporal_radius", None) is not None and getattr(model, "temporal_pad", None) is not None
            and callable(getattr(model, "forward_window", None)))


def pad_time(x: torch.Tensor, before: int, after: int, policy: str = "zeros") -> torch.Tensor:
    """(N, L, ...) -> (N, before + L + after, ...) with frames beyond the clip ends made by ``policy``: "zeros",
    "replicate" (the end frame repeated) or "reflect" (mirrored without repeating the end frame: -1 -> 1)."""
    if before == 0 and after == 0:
        return x
    L = x.shape[1]
    if policy == "zeros":
        z = x.new_zeros(x.shape[0], 1, *x.shape[2:])
        return torch.cat([z.expand(-1, before, *x.shape[2:]), x, z.expand(-1, after, *x.shape[2:])], 1)
    if policy == "replicate":
        idx = [0] * before + list(range(L)) + [L - 1] * after
    elif policy == "reflect":
        def refl(i):
            period = 2 * (L - 1)
            if period == 0:
                return 0
            i = abs(i) % period
            return period - i if i >= L else i
        idx = [refl(i) for i in range(-before, L + after)]
    else:
        raise VsrError(f"unknown temporal pad policy {policy!r}; choose from {', '.join(PAD_POLICIES)}")
    return x[:, idx]


class SlidingWindow(_Stateless):
    """A sliding-window model run window by window, exactly: output ``t`` is ``model.forward_window`` of frames
    ``t - R .. t + R`` (R = ``model.temporal_radius``). The Engine gives it R frames of left context (kept from
    the previous window) and R frames of lookahead (its ``overlap`` is set to R), so a frame is missing from ``x``
    only beyond the real ends of the clip; those are made by the model's ``temporal_pad`` policy. No state."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.radius = int(model.temporal_radius)
        self.policy = getattr(model, "temporal_pad", "zeros")
        if self.radius < 0 or self.policy not in PAD_POLICIES:
            raise VsrError(f"{type(model).__name__}: temporal_radius {self.radius} / temporal_pad "
                           f"{self.policy!r} not supported ({', '.join(PAD_POLICIES)})")

    def left_context(self) -> int:
        return self.radius

    def clone(self) -> "SlidingWindow":
        return SlidingWindow(self.model)

    def process(self, x: torch.Tensor, s: int, n_emit: int, left: int = 0) -> Iterator[Tuple[int, torch.Tensor]]:
        R, L = self.radius, x.shape[1]
        a, b = max(0, left - R), min(L, left + n_emit + R)
        xs = pad_time(x[:, a:b], R - (left - a), R - (b - left - n_emit), self.policy)
        for k in range(n_emit):
            yield s + k, self.model.forward_window(xs[:, k:k + 2 * R + 1])[0]

