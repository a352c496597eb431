"""The fast inference step for BasicVSR-style models: channels-last, fused epilogues, CUDA graphs.

The same function as ``BasicVSR.forward`` (and the engine's split window step), computed differently:

* **channels-last end to end.** Every activation is (N, C, H, W) with NHWC memory, so cuDNN runs its NHWC
  tensor-core convolutions with no layout conversion kernels around them.
* **fused epilogues.** CUDA: residual block ``conv1 + bias + ReLU`` is one cuDNN call (``cudnn_convolution_relu``),
  ``conv2`` runs without its bias and ``ops.bias_act`` adds bias and residual in one pass (in place); other convs
  run without bias and one ``bias_act`` / ``shuffle_nhwc`` pass applies bias + LeakyReLU (+ pixel shuffle).
  CPU: oneDNN's fused convolutions (``mkldnn._convolution_pointwise``: bias + ReLU / LeakyReLU, or bias + the
  residual add, in the convolution itself).
* **no concatenations.** The trunk's input ``cat([lq, feat])`` is one 72-channel buffer (feat | lq | zeros, the
  input conv's weight permuted and zero-padded to match): ``ops.warp_nhwc`` writes the warped feature straight
  into it. The fusion conv's ``cat([feat_b, feat_f])`` is one 128-channel buffer.
* **CUDA graphs.** Each per-frame step (warp + trunk for each branch, the reconstruction, SPyNet on a batch of
  pairs) is captured once per input shape (``GraphCache``) and replayed for every frame: no per-kernel launch
  cost on the host. Capture happens after two eager warm-up calls (cuDNN autotuning, Triton compiles).

Off CUDA (tests) the same code runs with torch convolutions and the kernels' Triton-interpreter or torch paths,
and no graphs. Numbers: fp16 in, fp32 accumulate (cuDNN, the epilogue kernels), flows in ``flow_dtype``.

Entry points: :func:`accelerate` (a module with the model's ``forward`` contract) and :class:`FastBasicVSR`'s
``flows`` / ``backward_feats`` / ``step`` / ``upsample`` (used by ``window.SplitBidirectional``).
"""
from __future__ import annotations

import math
import os
from collections import OrderedDict
from typing import Callable, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops.bias_act import bias_act
from .ops.residual_cast import residual_cast
from .ops.shuffle_nhwc import shuffle_nhwc
from .ops.warp_nhwc import warp_nhwc
from .weight_cast import cast_weight

__all__ = ["FastBasicVSR", "GraphCache", "accelerate", "supported"]

CL = torch.channels_last


def supported(core) -> bool:
    """True for BasicVSR and subclasses that keep its propagation (the fast path reproduces those layers)."""
    from .models.basicvsr import BasicVSR
    return isinstance(core, BasicVSR) and type(core).propagate is BasicVSR.propagate


# --------------------------------------------------------------------------------------------- convolutions
def _cl(t: torch.Tensor) -> torch.Tensor:
    return t if t.is_contiguous(memory_format=CL) else t.contiguous(memory_format=CL)


def _mkldnn_ok() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    except Exception:  # pragma: no cover - depends on the build
        return False


# CPU: oneDNN's fused convolutions (bias + activation, or bias + a residual add, in the convolution's epilogue).
# Tests set this False to run the CUDA composition (conv, then the Triton epilogue kernels) on the CPU.
CPU_FUSED = _mkldnn_ok()
_FUSED_DTYPES: dict = {}


def _cpu_fused(dtype: torch.dtype) -> bool:
    """oneDNN's fused CPU convolution for this dtype on this CPU. fp16 needs AVX512-FP16 or AVX-NE-CONVERT (an AMD
    EPYC with AVX512-BF16 has neither: oneDNN refuses fp16 there), so each dtype is probed once with a tiny
    convolution; where it is refused, the unfused composition (convolution, then the epilogue) runs instead."""
    if not CPU_FUSED:
        return False
    if dtype not in _FUSED_DTYPES:
        try:
            x = torch.zeros(1, 1, 2, 2, dtype=dtype)
            torch.ops.mkldnn._convolution_pointwise(x, torch.zeros(1, 1, 1, 1, dtype=dtype), None, [0, 0], [1, 1],
                                                   [1, 1], 1, "none", [], "")
            _FUSED_DTYPES[dtype] = True
        except RuntimeError:
            _FUSED_DTYPES[dtype] = False
    return _FUSED_DTYPES[dtype]


_ACT_SCALARS = {"none": [], "relu": [], "lrelu": [0.1]}
_ACT_NAME = {"none": "none", "relu": "relu", "lrelu": "leaky_relu"}
# bf16 plan: residual blocks per trunk (the last ones) whose output is compensated (FastBasicVSR compensated_blocks)
COMPENSATED_BLOCKS = 0


def conv(x: torch.Tensor, w: torch.Tensor, pad: int) -> torch.Tensor:
    """Convolution without bias, channels-last in and out."""
    return _cl(F.conv2d(x, w, None, 1, pad))


def conv_act(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, act: str, pad: int) -> torch.Tensor:
    """act(conv(x) + b) for act in none / relu / lrelu (slope 0.1), channels-last. CUDA: ReLU is fused in cuDNN
    (``cudnn_convolution_relu``), the others run the convolution without bias and one ``bias_act`` pass; CPU:
    one oneDNN call with bias and activation fused."""
    if x.is_cuda:
        if act == "relu":
            return _cl(torch.cudnn_convolution_relu(x, w, b, (1, 1), (pad, pad), (1, 1), 1))
        y = conv(x, w, pad)
        return bias_act(y, b, act, 0.1, out=y)
    if _cpu_fused(x.dtype):
        return _cl(torch.ops.mkldnn._convolution_pointwise(x, w, b, [pad, pad], [1, 1], [1, 1], 1, _ACT_NAME[act],
                                                          _ACT_SCALARS[act], ""))
    y = conv(x, w, pad)
    return bias_act(y, b, act, 0.1, out=y)


def conv_residual(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """z + conv(x) + b (a residual block's second convolution). CUDA: the convolution without bias, then one
    ``bias_act`` pass that adds bias and residual in place over ``z`` (returned); CPU: one oneDNN call."""
    if not x.is_cuda and _cpu_fused(x.dtype):
        return _cl(torch.ops.mkldnn._convolution_pointwise(x, z, w, b, [1, 1], [1, 1], [1, 1], 1, "add", None,
                                                          None, [], ""))
    y = conv(x, w, 1)
    return bias_act(y, b, "none", z=z, out=z)


def conv_residue(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, y: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """conv(x) + b - y rounded once to ``y``'s dtype: with ``y`` = conv(x) + b rounded to 16 bits, the rounding's
    residual, so ``y.float() + residue.float()`` is the convolution's fp32-accumulated output to ~16 bits (torch's
    oneDNN entry points give 16-bit outputs only). CPU: one oneDNN call (the binary post-op subtracts ``y`` in the
    fp32 epilogue); elsewhere the fp32 convolution of the same 16-bit operands."""
    if not x.is_cuda and x.dtype == torch.bfloat16 and _cpu_fused(x.dtype):
        return _cl(torch.ops.mkldnn._convolution_pointwise(x, y, w, b, [pad, pad], [1, 1], [1, 1], 1, "sub", None,
                                                          None, [], ""))
    return _cl((F.conv2d(x.float(), w.float(), b.float(), 1, pad) - y.float()).to(y.dtype))


def conv_shuffle_lrelu(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """lrelu(pixel_shuffle(conv(x) + b, 2)): CUDA ``shuffle_nhwc`` after a bias-free conv; CPU: the LeakyReLU
    commutes with the shuffle (element-wise), so oneDNN fuses bias + activation and the shuffle moves data."""
    if not x.is_cuda and _cpu_fused(x.dtype):
        return _cl(F.pixel_shuffle(conv_act(x, w, b, "lrelu", 1), 2))
    return shuffle_nhwc(conv(x, w, 1), b, 0.1)


# --------------------------------------------------------------------------------------------- CUDA graphs
class GraphCache:
    """``fn(*tensors) -> tensor or tuple of tensors`` replayed from a CUDA graph captured per input signature
    (shapes, strides, dtypes). Inputs are copied into the graph's static inputs; outputs are the graph's static
    outputs, valid until the next call (clone what you keep). Off CUDA, or with ``enabled=False``, it calls ``fn``.
    A capture that fails (out of memory, an op that cannot be captured) turns graphs off for this cache and runs
    eagerly from then on; ``self.failed`` says why."""

    def __init__(self, fn: Callable, enabled: bool = True, max_entries: int = 4, warmup: int = 2):
        self.fn = fn
        self.enabled = enabled
        self.max_entries = max_entries
        self.warmup = warmup
        self.entries: "OrderedDict[tuple, tuple]" = OrderedDict()
        self.failed: Optional[str] = None
        self.captures = 0
        self.replays = 0

    @staticmethod
    def _key(args) -> tuple:
        # strides of size-1 dims do not matter (frame k of any window length is the same signature)
        return tuple((tuple(a.shape), tuple(st if sz != 1 else 0 for sz, st in zip(a.shape, a.stride())),
                      a.dtype, a.device) for a in args)

    def __call__(self, *args: torch.Tensor):
        if not (args and all(a.is_cuda for a in args)):
            return self.fn(*args)
        with _Benchmark():
            return self._call(args)

    def _call(self, args):
        if not (self.enabled and self.failed is None):
            return self.fn(*args)
        key = self._key(args)
        e = self.entries.get(key)
        if e is None:
            try:
                e = self._capture(args)
            except Exception as exc:  # noqa: BLE001 - any capture failure falls back to eager, once, with the reason
                self.failed = f"{type(exc).__name__}: {str(exc)[:200]}"
                self.entries.clear()
                torch.cuda.synchronize()
                return self.fn(*args)
            self.entries[key] = e
            while len(self.entries) > self.max_entries:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        graph, static_in, static_out = e
        for s, a in zip(static_in, args):
            s.copy_(a)
        graph.replay()
        self.replays += 1
        return static_out

    def _capture(self, args):
        static_in = [torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device=a.device).copy_(a)
                     for a in args]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # cuDNN autotuning and kernel compiles happen here, outside the capture
                self.fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the Engine's upload/download threads keep issuing copies on their own streams meanwhile
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self.fn(*static_in)
        self.captures += 1
        return graph, static_in, static_out


class _Benchmark:
    """cuDNN autotuning on for the fast step's calls (restored after): its shapes repeat every frame."""

    def __enter__(self):
        self.old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True

    def __exit__(self, *exc):
        torch.backends.cudnn.benchmark = self.old


def _graphs_default(device: torch.device) -> bool:
    return device.type == "cuda" and os.environ.get("VSR_ENGINE_CUDA_GRAPHS", "1") != "0"


# --------------------------------------------------------------------------------------------- weights
class _Trunk:
    """A ``ConvResidualBlocks`` trunk's weights, ready for the fast step (dtype, channels-last, padded input)."""

    def __init__(self, trunk: nn.Module, num_feat: int, dtype: torch.dtype, entry_dtype: torch.dtype):
        first = trunk.main[0]
        nin = first.weight.shape[1]
        n_lq = nin - num_feat  # the official input is cat([lq, feat]): lq channels first
        self.cin = 8 * math.ceil((num_feat + n_lq) / 8)  # buffer channels: feat | lq | zeros
        w = cast_weight(first.weight, entry_dtype)
        wp = w.new_zeros(w.shape[0], self.cin, 3, 3)
        wp[:, :num_feat] = w[:, n_lq:]
        wp[:, num_feat:num_feat + n_lq] = w[:, :n_lq]
        self.n_lq = n_lq
        self.w_in = wp.contiguous(memory_format=CL)
        self.b_in = first.bias.detach().to(entry_dtype)
        self.blocks = _residual_blocks(trunk.main[2], dtype)
        self.compensated = frozenset()  # blocks whose output is compensated (FastBasicVSR's compensated_blocks)


def _residual_blocks(blocks: nn.Module, dtype: torch.dtype):
    """(conv1 weight, conv1 bias, conv2 weight, conv2 bias) of each ``ResidualBlockNoBN``, cast, channels-last."""
    return [(cast_weight(b.conv1.weight, dtype).contiguous(memory_format=CL), b.conv1.bias.detach().to(dtype),
             cast_weight(b.conv2.weight, dtype).contiguous(memory_format=CL), b.conv2.bias.detach().to(dtype))
            for b in blocks]


class _Cleaner:
    """RealBasicVSR's image-cleaning module (``ConvResidualBlocks(3, F, n)`` + conv F -> 3), ready for the fast
    step: the 3-channel input zero-padded to 8 channels (tensor-core / oneDNN friendly), channels-last."""

    def __init__(self, module: nn.Module, dtype: torch.dtype, out_dtype: torch.dtype):
        blocks, last = module[0], module[1]
        first = blocks.main[0]
        self.nin = first.weight.shape[1]
        self.cin = 8 * math.ceil(self.nin / 8)
        w = cast_weight(first.weight, dtype)
        wp = w.new_zeros(w.shape[0], self.cin, 3, 3)
        wp[:, :self.nin] = w
        self.w_in = wp.contiguous(memory_format=CL)
        self.b_in = first.bias.detach().to(dtype)
        self.blocks = _residual_blocks(blocks.main[2], dtype)
        self.last = _w(last, out_dtype)


def _w(conv_mod: nn.Conv2d, dtype, out_pad: int = 0):
    w = cast_weight(conv_mod.weight, dtype)
    b = conv_mod.bias.detach().to(dtype) if conv_mod.bias is not None else None
    if out_pad:
        w = torch.cat([w, w.new_zeros(out_pad, *w.shape[1:])])
        b = torch.cat([b, b.new_zeros(out_pad)]) if b is not None else None
    return w.contiguous(memory_format=CL), b


# --------------------------------------------------------------------------------------------- the model
class FastBasicVSR:
    """The fast step of a BasicVSR ``core`` (not a copy of its weights' values: a cast/re-laid copy).

    ``dtype``: activation dtype (fp16 default; bf16; fp32 for exactness checks). ``flow_dtype``: SPyNet's dtype
    (default: the dtype of ``core.spynet``'s parameters, so the engine's fp32-SPyNet setting carries over).
    ``graphs``: CUDA graphs (default on CUDA unless ``VSR_ENGINE_CUDA_GRAPHS=0``). ``fp32_islands``: parts kept in
    fp32 around 16-bit convolutions -- ``"residual"`` (each trunk's residual stream and the propagated feature)
    and ``"output"`` (the last convolution and the bilinear base); default both for bf16 (its 8-bit mantissa
    costs ~0.4 dB there: bench/eval_fast_fidelity.py), none otherwise. ``compensated_blocks``: with the residual
    island, the last N residual blocks of each trunk add their second convolution's output to the fp32 stream at
    ~16 bits instead of 8 (a second oneDNN pass gives the bf16 rounding's residual: :func:`conv_residue`); default
    ``COMPENSATED_BLOCKS`` for bf16 with the residual island, else 0. ``master``: the same model with its fp32
    weights, where ``core`` was already cast to the run's dtype (the Engine casts its module first): the fast step's
    weights (tap-sum bf16 casts, fp32 islands) are made from it; default ``core``.
    """

    def __init__(self, core, dtype: torch.dtype = torch.float16, flow_dtype: Optional[torch.dtype] = None,
                 graphs: Optional[bool] = None, fp32_islands: Optional[Sequence[str]] = None, cleaner=None,
                 compensated_blocks: Optional[int] = None, master=None):
        if not supported(core):
            raise TypeError(f"FastBasicVSR: {type(core).__name__} is not a BasicVSR-style model")
        from .models.basicvsr import BasicVSR
        p = next(core.parameters())
        self.device = p.device
        self.dtype = dtype
        self.flow_dtype = flow_dtype or next(core.spynet.parameters()).dtype
        self.num_feat = core.num_feat
        self.core = core
        src = core if master is None else master  # the weights' source (fp32 where the caller has them)
        if master is not None and (type(master) is not type(core) or master.num_feat != core.num_feat):
            raise TypeError(f"FastBasicVSR: master is a {type(master).__name__}, core a {type(core).__name__}")
        if fp32_islands is None:
            fp32_islands = ("residual", "output") if dtype == torch.bfloat16 else ()
        bad = set(fp32_islands) - {"residual", "output"}
        if bad:
            raise ValueError(f"FastBasicVSR: unknown fp32 islands {sorted(bad)} (residual, output)")
        self.islands = tuple(fp32_islands)
        self.feat_dtype = torch.float32 if "residual" in self.islands else dtype
        # the residual island includes each trunk's entry convolution (the propagated feature and the frame in, the
        # residual stream out): in 16 bits the recurrence re-rounds its own state there at every step
        self.trunk_b = _Trunk(src.backward_trunk, src.num_feat, dtype, self.feat_dtype)
        self.trunk_f = _Trunk(src.forward_trunk, src.num_feat, dtype, self.feat_dtype)
        nb = len(self.trunk_f.blocks)
        if compensated_blocks is None:
            compensated_blocks = COMPENSATED_BLOCKS if dtype == torch.bfloat16 and "residual" in self.islands else 0
        if not 0 <= int(compensated_blocks) <= nb:
            raise ValueError(f"FastBasicVSR: compensated_blocks {compensated_blocks} not in 0 .. {nb}")
        if compensated_blocks and "residual" not in self.islands:
            raise ValueError("FastBasicVSR: compensated_blocks needs the residual fp32 island")
        # indices of the blocks whose output enters the fp32 stream compensated (the last N of each trunk)
        self.trunk_b.compensated = self.trunk_f.compensated = frozenset(range(nb - int(compensated_blocks), nb))
        # the frames as given to each part: fp32 where an island reads them (entry convolution, bilinear base)
        self.lq_dtype = torch.float32 if self.islands else dtype
        self.own_upsample = type(core).upsample is BasicVSR.upsample
        if self.own_upsample:
            self.fusion = _w(src.fusion, dtype)
            self.upconv1 = _w(src.upconv1, dtype)
            self.upconv2 = _w(src.upconv2, dtype)
            self.conv_hr = _w(src.conv_hr, dtype)
            self.conv_last = _w(src.conv_last, torch.float32 if "output" in self.islands else dtype)
        fdt = self.flow_dtype
        self.spy = [[_w(m, fdt, out_pad=(6 if i == 8 else 0)) for i, m in enumerate(bm.basic_module)
                     if isinstance(m, nn.Conv2d)] for bm in src.spynet.basic_module]
        self.spy_mean = src.spynet.mean.detach().to(fdt)
        self.spy_std = src.spynet.std.detach().to(fdt)
        g = _graphs_default(self.device) if graphs is None else bool(graphs)
        self.graphs = g
        self._step_b = GraphCache(lambda lq, feat, flow: self._trunk_step(self.trunk_b, lq, feat, flow), g)
        self._step_f = GraphCache(lambda lq, feat, flow: self._trunk_step(self.trunk_f, lq, feat, flow), g)
        self._first_b = GraphCache(lambda lq: self._trunk_step(self.trunk_b, lq, None, None), g)
        self._first_f = GraphCache(lambda lq: self._trunk_step(self.trunk_f, lq, None, None), g)
        self._up = GraphCache(self._upsample, g, max_entries=2)
        # RealBasicVSR's cleaning loop (the module's ``clean`` semantics; the image itself stays fp32)
        self.cleaner = cleaner
        self.clean_w = None
        if cleaner is not None and hasattr(cleaner, "image_cleaning"):
            self.clean_w = _Cleaner(cleaner.image_cleaning, dtype, torch.float32 if "output" in self.islands
                                    else dtype)
        self._residue = GraphCache(self._clean_residue, g, max_entries=4)
        self._spynet = GraphCache(self._flows, g, max_entries=6)

    def graph_stats(self) -> dict:
        caches = {"step_b": self._step_b, "step_f": self._step_f, "first_b": self._first_b,
                  "first_f": self._first_f, "upsample": self._up, "spynet": self._spynet, "clean": self._residue}
        return {k: {"captures": c.captures, "replays": c.replays, "failed": c.failed} for k, c in caches.items()}

    # -- propagation ---------------------------------------------------------------------------------------
    def _trunk_step(self, tw: _Trunk, lq: torch.Tensor, feat: Optional[torch.Tensor],
                    flow: Optional[torch.Tensor]) -> torch.Tensor:
        """trunk(cat([lq, warp(feat, flow)])) -> (N, num_feat, H, W) channels-last."""
        n, _, h, w = lq.shape
        nf = self.num_feat
        buf = torch.empty(n, tw.cin, h, w, device=lq.device, dtype=self.feat_dtype, memory_format=CL)
        if feat is None:
            buf[:, :nf].zero_()
        else:
            warp_nhwc(feat, flow, "zeros", out=buf[:, :nf])
        buf[:, nf:nf + tw.n_lq].copy_(lq)
        if tw.cin > nf + tw.n_lq:
            buf[:, nf + tw.n_lq:].zero_()
        x = conv_act(buf, tw.w_in, tw.b_in, "lrelu", 1)
        if self.feat_dtype == self.dtype:
            for w1, b1, w2, b2 in tw.blocks:
                x = conv_residual(conv_act(x, w1, b1, "relu", 1), w2, b2, x)
            return x
        acc = x  # fp32 island: the residual stream (the blocks' convolutions in self.dtype)
        x = acc.to(self.dtype)
        for i, (w1, b1, w2, b2) in enumerate(tw.blocks):
            # acc += block(x); x = acc in self.dtype: one pass on the CPU (ops/residual_cast.py), two in torch
            m = conv_act(x, w1, b1, "relu", 1)
            y = conv_act(m, w2, b2, "none", 1)
            x = residual_cast(acc, y, self.dtype, conv_residue(m, w2, b2, y) if i in tw.compensated else None)
        return acc

    def step(self, lq: torch.Tensor, feat: Optional[torch.Tensor], flow: Optional[torch.Tensor],
             backward: bool) -> torch.Tensor:
        """One propagation step of a branch (graph-replayed on CUDA); returns a new channels-last tensor."""
        lq = lq.to(self.feat_dtype)  # the entry convolution's dtype (fp32 in the residual island)
        if feat is None:
            out = (self._first_b if backward else self._first_f)(lq)
        else:
            out = (self._step_b if backward else self._step_f)(lq, _cl(feat.to(self.feat_dtype)), flow)
        return out.clone(memory_format=CL)

    def backward_feats(self, lqs: torch.Tensor, flows: Optional[torch.Tensor], keep: int) -> List[torch.Tensor]:
        """The backward branch over ``lqs`` (N, T, 3, H, W) with ``flows[:, i]`` = flow of pair (i, i+1);
        returns the features of frames 0 .. keep-1 (the rest are only computed)."""
        t = lqs.shape[1]
        out: List[Optional[torch.Tensor]] = [None] * t
        feat = None
        for i in range(t - 1, -1, -1):
            feat = self.step(lqs[:, i], feat, flows[:, i] if feat is not None else None, backward=True)
            out[i] = feat
        return out[:keep]  # type: ignore[return-value]

    # -- reconstruction ------------------------------------------------------------------------------------
    def _upsample(self, lq: torch.Tensor, feat_b: torch.Tensor, feat_f: torch.Tensor) -> torch.Tensor:
        n, _, h, w = lq.shape
        nf = self.num_feat
        cat = torch.empty(n, 2 * nf, h, w, device=lq.device, dtype=self.dtype, memory_format=CL)
        cat[:, :nf].copy_(feat_b)
        cat[:, nf:].copy_(feat_f)
        x = conv_act(cat, *self.fusion, "lrelu", 0)
        x = conv_shuffle_lrelu(x, *self.upconv1)
        x = conv_shuffle_lrelu(x, *self.upconv2)
        y = conv_act(x, *self.conv_hr, "lrelu", 1)
        wl, bl = self.conv_last
        out = F.conv2d(y.to(wl.dtype), wl, bl, 1, 1)
        return out + F.interpolate(lq.to(wl.dtype), scale_factor=4, mode="bilinear", align_corners=False)

    def upsample(self, lq: torch.Tensor, feat_b: torch.Tensor, feat_f: torch.Tensor) -> torch.Tensor:
        """(N, 3, 4H, 4W) output of one frame (a new tensor)."""
        if not self.own_upsample:  # a subclass's own reconstruction (any-scale heads): the module, in its dtype
            dt = self.dtype
            return self.core.upsample(lq.to(dt), feat_b.to(dt), feat_f.to(dt))
        return self._up(lq.to(self.lq_dtype), _cl(feat_b), _cl(feat_f)).clone()

    # -- cleaning (RealBasicVSR) -----------------------------------------------------------------------------
    def _clean_residue(self, x: torch.Tensor) -> torch.Tensor:
        cw = self.clean_w
        b, _, h, w = x.shape
        buf = torch.empty(b, cw.cin, h, w, device=x.device, dtype=self.dtype, memory_format=CL)
        buf[:, :cw.nin].copy_(x)
        if cw.cin > cw.nin:
            buf[:, cw.nin:].zero_()
        y = conv_act(buf, cw.w_in, cw.b_in, "lrelu", 1)
        for w1, b1, w2, b2 in cw.blocks:
            y = conv_residual(conv_act(y, w1, b1, "relu", 1), w2, b2, y)
        wl, bl = cw.last
        return F.conv2d(y.to(wl.dtype), wl, bl, 1, 1)

    def clean(self, lqs: torch.Tensor):
        """``RealBasicVSR.clean``: up to 3 passes of x <- x + C(x), stopping when mean|C(x)| over the window is
        under the threshold; returns (cleaned frames in fp32, passes). Falls back to the module's own ``clean``
        for cleaners this step does not know."""
        if self.clean_w is None:
            return self.cleaner.clean(lqs)
        from .models.realbasicvsr import MAX_CLEANING_PASSES
        n, t, c, h, w = lqs.shape
        x = lqs.reshape(n * t, c, h, w).float()
        thres = self.cleaner.dynamic_refine_thres / 255.0
        passes = 0
        for passes in range(1, MAX_CLEANING_PASSES + 1):
            r = self._residue(x.to(self.dtype)).float()
            x = x + r
            if passes == MAX_CLEANING_PASSES or bool(r.abs().mean() < thres):
                break
        return x.view(n, t, c, h, w), passes

    # -- alignment -----------------------------------------------------------------------------------------
    def _spy_level(self, k: int, r, s, flow_up):
        n, _, h, w = r.shape
        buf = torch.empty(n, 8, h, w, device=r.device, dtype=r.dtype, memory_format=CL)
        buf[:, 0:3].copy_(r)
        warp_nhwc(s, flow_up, "border", out=buf[:, 3:6])
        buf[:, 6:8].copy_(flow_up)
        x = buf
        layers = self.spy[k]
        for i, (wt, b) in enumerate(layers):
            if i < len(layers) - 1:
                x = conv_act(x, wt, b, "relu", 3)
            else:
                x = F.conv2d(x, wt, b, 1, 3)
        return flow_up + x[:, :2]

    def _flows(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """SPyNet (same function as ``models.basicvsr.SpyNet.forward``) in ``flow_dtype``, channels-last."""
        h, w = ref.shape[-2:]
        h_up, w_up = 32 * math.ceil(h / 32), 32 * math.ceil(w / 32)
        ref = _cl(F.interpolate(ref, size=(h_up, w_up), mode="bilinear", align_corners=False))
        supp = _cl(F.interpolate(supp, size=(h_up, w_up), mode="bilinear", align_corners=False))
        rp = [_cl((ref - self.spy_mean) / self.spy_std)]
        sp = [_cl((supp - self.spy_mean) / self.spy_std)]
        for _ in range(5):
            rp.insert(0, _cl(F.avg_pool2d(rp[0], 2, 2, count_include_pad=False)))
            sp.insert(0, _cl(F.avg_pool2d(sp[0], 2, 2, count_include_pad=False)))
        n, _, h0, w0 = rp[0].shape
        flow = torch.empty(n, 2, h0, w0, device=ref.device, dtype=ref.dtype, memory_format=CL).zero_()
        for level, (r, s) in enumerate(zip(rp, sp)):
            up = flow if level == 0 else _cl(F.interpolate(flow, scale_factor=2, mode="bilinear",
                                                           align_corners=True) * 2.0)
            flow = self._spy_level(level, r, s, up)
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        sx, sy = w / w_up, h / h_up
        return torch.stack((flow[:, 0] * sx, flow[:, 1] * sy), dim=1)

    def flows(self, ref: torch.Tensor, supp: torch.Tensor) -> torch.Tensor:
        """Flow (N, 2, H, W) warping ``supp`` onto ``ref`` (a new tensor, ``flow_dtype``)."""
        fdt = self.flow_dtype
        return self._spynet(ref.to(fdt).contiguous(), supp.to(fdt).contiguous()).clone()

    # -- the whole window ------------------------------------------------------------------------------------
    def forward(self, lqs: torch.Tensor) -> torch.Tensor:
        """``BasicVSR.forward``: (N, T, 3, H, W) -> (N, T, 3, 4H, 4W), in ``dtype``."""
        from .models.basicvsr import check_input
        check_input(lqs)
        n, t, c, h, w = lqs.shape
        lqs = lqs.to(self.lq_dtype)
        if t > 1:
            x1 = lqs[:, :-1].reshape(-1, c, h, w)
            x2 = lqs[:, 1:].reshape(-1, c, h, w)
            flows = self.flows(torch.cat([x1, x2]), torch.cat([x2, x1]))
            fb = flows[:n * (t - 1)].view(n, t - 1, 2, h, w)
            ff = flows[n * (t - 1):].view(n, t - 1, 2, h, w)
        else:
            fb = ff = None
        feats_b = self.backward_feats(lqs, fb, t)
        outs = []
        feat = None
        for i in range(t):
            feat = self.step(lqs[:, i], feat, ff[:, i - 1] if feat is not None else None, backward=False)
            outs.append(self.upsample(lqs[:, i], feats_b[i], feat))
            feats_b[i] = None  # type: ignore[call-overload]
        return torch.stack(outs, dim=1)


class Accelerated(nn.Module):
    """``accelerate(model)``: a module with the model's forward contract that runs the fast step. The wrapped
    model stays reachable as ``.model``; the fast weights are built at construction (re-wrap after changing it)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float16,
                 flow_dtype: Optional[torch.dtype] = None, graphs: Optional[bool] = None):
        super().__init__()
        from .window import unwrap
        core, cleaner = unwrap(model)
        if core is None or not supported(core):
            raise TypeError(f"accelerate: {type(model).__name__} has no fast step (BasicVSR-style models only)")
        self.model = model
        self.cleaner = cleaner
        self.fast = FastBasicVSR(core, dtype, flow_dtype, graphs, cleaner=cleaner)
        self.scale = getattr(model, "scale", 4)

    @torch.no_grad()
    def forward(self, lqs: torch.Tensor) -> torch.Tensor:
        if self.cleaner is not None:
            lqs, self.model.last_cleaning_passes = self.fast.clean(lqs)
        return self.fast.forward(lqs)


def accelerate(model: nn.Module, dtype: torch.dtype = torch.float16, flow_dtype: Optional[torch.dtype] = None,
               graphs: Optional[bool] = None) -> Accelerated:
    """Wrap a BasicVSR / RealBasicVSR (on its device) in the fast step; see the module docstring."""
    return Accelerated(model, dtype, flow_dtype, graphs)
