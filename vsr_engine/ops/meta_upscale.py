"""meta_upscale: Meta-SR's Meta-Upscale (Hu et al., CVPR 2019) for an arbitrary, non-integer scale r.

    meta_upscale(feat, scale, w1, b1, w2, b2, out_channels=3, kernel_size=3) -> (N, O, floor(r*H), floor(r*W))

A weight-prediction MLP -- Linear(3, 256) = (w1 (256, 3), b1), ReLU, Linear(256, k*k*C*O) = (w2, b2) -- maps
(1/r, frac(i/r), frac(j/r)), in that order, to the weights of output pixel (i, j); the output is the dot product
of those weights with the zero-padded k x k x C neighbourhood of the LR feature at (floor(i/r), floor(j/r)),
weight index (c*k*k + ky*k + kx)*O + o, no bias. (XuecaiHu/Meta-SR-Pytorch branch 0.4.0, ``metardn.py`` and
``trainer.py::input_matrix_wpn``; /work/shared/reference/models.md section 3.2.)

Coordinates are computed exactly as Meta-SR does: i/r = float32(i) * float32(1/r), floor and fraction of that
(clamped to the last LR row/column), output size int(r*H) x int(r*W).

The weights depend only on (frac(i/r), frac(j/r)), so the MLP runs once per distinct (row offset, column
offset) pair -- r*r pairs for an integer r, a few hundred for r = 2.3 -- never per pixel. The kernels then gather:
each output pixel looks up its pair's weights and its LR neighbourhood. Backward: d/dfeat is a scatter (atomics
in the kernels); d/dweights is reduced per pair (a program per pair and weight slice, no atomics), then the
MLP's backward is two small GEMMs. The whole thing is one custom op so that torch.compile sees fixed shapes.
Backends: triton, cuda (csrc/meta_upscale.cu), torch (``meta_upscale_ref`` is the literal per-pixel
definition, for tests; the op's torch path is the per-pair one).
"""
from __future__ import annotations

import math
import threading

from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from . import _cuda
from ._backend import TRITON_OK, pick, tl, triton
from ._util import CUDA_DTYPE, acc_dtype, cdiv, check_float, interpret_or, next_pow2, tl_acc
from ._autocast import autocast_inputs

__all__ = ["meta_upscale", "meta_upscale_ref", "meta_out_size"]


# ============================================================================================ coordinates
def meta_out_size(h: int, w: int, scale: float) -> Tuple[int, int]:
    """floor(r*h) x floor(r*w), as exact arithmetic gives it: 1.4 * 90 is 125.99999999999999 in binary floating
    point, and the output is 126 rows (the same rule as ``tiling``; one output size everywhere)."""
    return int(math.floor(scale * h + 1e-6)), int(math.floor(scale * w + 1e-6))


def _axis(n_in: int, n_out: int, scale: float):
    """LR index and fractional offset of every output row (or column), Meta-SR's fp32 arithmetic."""
    coord = torch.arange(n_out, dtype=torch.float32) * (1.0 / scale)
    base = torch.floor(coord)
    frac = coord - base
    idx = base.to(torch.int64).clamp_(max=n_in - 1)
    return idx, frac


_TABLES: Dict[tuple, dict] = {}


def _tables(h: int, w: int, scale: float, device: torch.device) -> dict:
    """Per-axis LR index, offset class, distinct offsets and class-sorted order (cached per size/scale/device),
    plus ``max_pix`` (an int): the most output pixels of one offset pair."""
    key = (h, w, float(scale), str(device))
    t = _TABLES.get(key)
    if t is not None:
        return t
    oh, ow = meta_out_size(h, w, scale)
    t = {}
    for name, n_in, n_out in (("h", h, oh), ("w", w, ow)):
        idx, frac = _axis(n_in, n_out, scale)
        uniq, cls = torch.unique(frac, sorted=True, return_inverse=True)
        order = torch.argsort(cls, stable=True)
        start = torch.zeros(len(uniq) + 1, dtype=torch.int64)
        start[1:] = torch.cumsum(torch.bincount(cls, minlength=len(uniq)), 0)
        t.update({f"idx_{name}": idx, f"cls_{name}": cls, f"off_{name}": uniq, f"order_{name}": order,
                  f"start_{name}": start})
    # the most output pixels of one (row class, column class) pair: grid size of the per-class kernels
    max_pix = int(torch.diff(t["start_h"]).max()) * int(torch.diff(t["start_w"]).max())
    t = {k: (v.to(torch.int32) if v.dtype == torch.int64 else v).to(device) for k, v in t.items()}
    t["max_pix"] = max_pix
    if len(_TABLES) > 64:
        _TABLES.clear()
    _TABLES[key] = t
    return t


def _mlp_input(scale: float, off_h: torch.Tensor, off_w: torch.Tensor, dtype) -> torch.Tensor:
    """(1/r, dh, dw) for every (row class, column class) pair, pair index = a * Dw + b."""
    dh, dw = off_h.numel(), off_w.numel()
    inv = torch.full((dh, dw), 1.0 / scale, dtype=torch.float32, device=off_h.device)  # fp32, as Meta-SR
    return torch.stack((inv, off_h[:, None].expand(dh, dw), off_w[None, :].expand(dh, dw)), -1).view(-1, 3).to(dtype)


# ============================================================================================ reference
def meta_upscale_ref(feat: torch.Tensor, scale: float, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                     b2: torch.Tensor, out_channels: int = 3, kernel_size: int = 3) -> torch.Tensor:
    """The literal definition: MLP per output pixel, unfold, dot. Memory O(outH*outW*k*k*C*O): tests only."""
    _check(feat, scale, w1, b1, w2, b2, out_channels, kernel_size)
    n, c, h, w = feat.shape
    k, o = kernel_size, out_channels
    oh, ow = meta_out_size(h, w, scale)
    ih, fh = _axis(h, oh, scale)
    iw, fw = _axis(w, ow, scale)
    dev = feat.device
    inp = torch.stack((torch.full((oh, ow), 1.0 / scale, dtype=torch.float32), fh[:, None].expand(oh, ow),
                       fw[None, :].expand(oh, ow)), -1).view(-1, 3).to(dev, w1.dtype)
    wts = F.linear(F.relu(F.linear(inp, w1, b1)), w2, b2).view(oh * ow, c * k * k, o)
    cols = F.unfold(feat, k, padding=k // 2)  # (n, c*k*k, h*w), index c*k*k + ky*k + kx
    src = (ih[:, None] * w + iw[None, :]).view(-1).to(dev)
    out = torch.einsum("nkp,pko->nop", cols[:, :, src], wts.to(feat.dtype))
    return out.reshape(n, o, oh, ow)


def _check(feat, scale, w1, b1, w2, b2, out_channels, kernel_size):
    if feat.dim() != 4:
        raise ValueError(f"meta_upscale expects feat (N, C, H, W), got {tuple(feat.shape)}")
    c = feat.shape[1]
    k, o = kernel_size, out_channels
    if not (scale > 0) or min(meta_out_size(feat.shape[2], feat.shape[3], scale)) < 1:
        raise ValueError(f"meta_upscale: scale {scale} gives an empty output for {tuple(feat.shape)}")
    if k < 1 or k % 2 == 0:
        raise ValueError(f"meta_upscale: kernel_size must be odd, got {k}")
    hid = w1.shape[0]
    want = {"w1": (hid, 3), "b1": (hid,), "w2": (k * k * c * o, hid), "b2": (k * k * c * o,)}
    for name, t in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2)):
        if tuple(t.shape) != want[name]:
            raise ValueError(f"meta_upscale: {name} must be {want[name]} for C={c}, O={o}, k={k}, got {tuple(t.shape)}")
        check_float(f"meta_upscale {name}", t)
        if t.device != feat.device:
            raise ValueError(f"meta_upscale: {name} on {t.device}, feat on {feat.device}")
    check_float("meta_upscale feat", feat)


# ============================================================================================ MLP (all backends)
def _mlp(scale, tb, w1, b1, w2, b2, cdt):
    """Per-pair weights, as (pairs, O, K) contiguous in cdt, plus what the backward needs."""
    inp = _mlp_input(scale, tb["off_h"], tb["off_w"], cdt)
    z1 = F.linear(inp, w1.to(cdt), b1.to(cdt))
    hid = F.relu(z1)
    return inp, z1, hid, F.linear(hid, w2.to(cdt), b2.to(cdt))


def _mlp_dtype(w2, cdt, lowp: bool):
    """The MLP's compute dtype: cdt, or its 16-bit parameters' own dtype when ``lowp``."""
    return w2.dtype if lowp and w2.dtype in (torch.float16, torch.bfloat16) else cdt


def _pairs_wt(mlp_out: torch.Tensor, o: int, contiguous: bool = True) -> torch.Tensor:
    """(pairs, O, K); ``contiguous=False``: a view (the torch path lays it out as each of its ways needs)."""
    wt = mlp_out.view(mlp_out.shape[0], -1, o).transpose(1, 2)
    return wt.contiguous() if contiguous else wt


def _pair_weights(scale, tb, w1, b1, w2, b2, mdt, cdt, o, k, c, host: bool, contiguous: bool):
    """The MLP in mdt, its per-pair weights in cdt: on the host path (pairs, O, k*k, C), written directly by the
    last layer's rows permuted (``_host_perm``: no reorder copy); else (pairs, O, K) (``_pairs_wt``). Returns
    ((inp, z1, hid, the w2 used, the inverse permutation or None), weights) -- the first part for ``_mlp_backward``."""
    inv = None
    if host:
        perm, inv = _host_perm(c, o, k, w2.device)
        w2, b2 = w2[perm], b2[perm]
    inp, z1, hid, mlp_out = _mlp(scale, tb, w1, b1, w2, b2, mdt)
    wt = mlp_out.to(cdt)
    wt = wt.view(-1, o, k * k, c) if host else _pairs_wt(wt, o, contiguous)
    return (inp, z1, hid, w2, inv), wt


def _mlp_backward(g_out, inp, z1, hid, w1, w2, need):
    """g_out (pairs, MLP outputs) -> grads of (w1, b1, w2, b2)."""
    gw2 = g_out.t() @ hid if need[3] else None
    gb2 = g_out.sum(0) if need[4] else None
    gw1 = gb1 = None
    if need[1] or need[2]:
        gz1 = (g_out @ w2.to(g_out.dtype)) * (z1 > 0)
        gw1 = gz1.t() @ inp if need[1] else None
        gb1 = gz1.sum(0) if need[2] else None
    return gw1, gb1, gw2, gb2


# ============================================================================================ torch path
# Two ways. Conv: every (row class, column class) pair's O x K weights applied at every LR pixel is one convolution
# with pairs * O output channels (a pair's K = C*k*k vector is a k x k conv filter, unfold's order), and each output
# pixel then picks one of its values: out[n, o, i, j] = Y[n, o, pair(i, j), idx_h[i], idx_w[j]]. It computes
# pairs * H * W filters for OH * OW pixels -- exactly as many at an integer scale (pairs = r^2), more when the
# offsets have many classes (scale 3.7: 37 x 37 pairs) -- so it is taken while that excess is at most _CONV_EXCESS.
# Per class: the unfold gathered per output pixel (the K vectors of OH * OW pixels) and contracted per row class.
_CONV_EXCESS = 4.0


def _conv_fits(tb, h, w, oh, ow) -> bool:
    return tb["off_h"].numel() * tb["off_w"].numel() * h * w <= _CONV_EXCESS * oh * ow


def _conv_pick(tb, h, w, oh, ow) -> torch.Tensor:
    """Flat index of every output pixel into one channel's (pairs, H, W) block of Y, cached with the tables."""
    pos = tb.get("conv_pick")
    if pos is None:
        dw = tb["off_w"].numel()
        pair = tb["cls_h"].long()[:, None] * dw + tb["cls_w"].long()[None, :]
        pos = (pair * (h * w) + tb["idx_h"].long()[:, None] * w + tb["idx_w"].long()[None, :]).reshape(-1)
        tb["conv_pick"] = pos
    return pos


def _conv_weight(wt, k):
    """(pairs, O, K) -> (O * pairs, C, k, k): output channel o * pairs + pair."""
    pairs, o, kk = wt.shape
    return wt.transpose(0, 1).reshape(o * pairs, kk // (k * k), k, k)


def _conv_apply(feat, wt, tb, k, oh, ow):
    n, c, h, w = feat.shape
    o = wt.shape[1]
    y = F.conv2d(feat.to(wt.dtype), _conv_weight(wt, k), padding=k // 2)        # (n, O * pairs, h, w)
    return y.view(n, o, -1).index_select(2, _conv_pick(tb, h, w, oh, ow)).view(n, o, oh, ow)


def _conv_apply_bwd(grad, feat, wt, tb, k, need_feat, need_wt):
    n, c, h, w = feat.shape
    pairs, o, kk = wt.shape
    pos = _conv_pick(tb, h, w, grad.shape[2], grad.shape[3])
    g_y = grad.new_zeros((n, o, pairs * h * w), dtype=wt.dtype)
    g_y.index_add_(2, pos, grad.to(wt.dtype).reshape(n, o, -1))          # a pixel's pick, summed (edge clamps)
    cw = _conv_weight(wt, k)
    g_feat, g_cw, _ = torch.ops.aten.convolution_backward(
        g_y.view(n, o * pairs, h, w), feat.to(wt.dtype), cw, None, [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0],
        1, [need_feat, need_wt, False])
    g_wt = g_cw.reshape(o, pairs, kk).transpose(0, 1) if need_wt else None
    return g_feat, g_wt


def _host(backend, feat, cdt, tb, oh, ow):
    """The host kernel (csrc/meta_upscale_cpu.cpp) for this call, or None: the torch backend on CPU tensors where
    the one-convolution way does not fit, fp32 / fp64 compute, and the kernel built here (ops/_host_kernels.py)."""
    if (backend in _APPLY or feat.device.type != "cpu" or cdt not in (torch.float32, torch.float64)
            or _conv_fits(tb, feat.shape[2], feat.shape[3], oh, ow)):
        return None
    from . import _host_kernels
    return _host_kernels.load()


_PERM: Dict[tuple, tuple] = {}
_local = threading.local()     # keep / stash: the forward's per-pair weights handed to its backward (``meta_upscale``)


def _host_perm(c, o, k, device):
    """Rows of the MLP's last layer reordered so that its output is the host kernel's (O, k*k, C) layout per pair
    (the MLP's own order is K * O + o with K = c * k*k + tap, unfold's): (perm, inverse), cached."""
    key = (c, o, k, str(device))
    if key not in _PERM:
        perm = torch.arange(c * k * k * o, device=device).view(c, k * k, o).permute(2, 1, 0).reshape(-1)
        _PERM[key] = (perm, torch.argsort(perm))
    return _PERM[key]


def _host_geom(tb, n, c, h, w, oh, ow, o, k):
    keep = {name: tb[name].contiguous() for name in ("idx_h", "cls_h", "idx_w", "cls_w", "order_h", "start_h")}
    geom = {name: t.data_ptr() for name, t in keep.items()}
    geom.update(n=n, c=c, h=h, w=w, oh=oh, ow=ow, o=o, k=k, dw=tb["off_w"].numel(), dh=tb["off_h"].numel())
    return geom, keep


def _host_apply(mod, feat, wk, tb, k, oh, ow):
    """wk: (pairs, O, k*k, C) contiguous, the kernel's layout (the MLP writes it directly: ``_host_perm``)."""
    from ._host_kernels import threads
    n, c, h, w = feat.shape
    o = wk.shape[1]
    f = feat.to(wk.dtype).permute(0, 2, 3, 1).contiguous()                     # (n, h, w, c)
    out = torch.empty((n, o, oh, ow), dtype=wk.dtype)
    geom, keep = _host_geom(tb, n, c, h, w, oh, ow, o, k)
    mod.meta_upscale("forward", geom, f.data_ptr(), wk.data_ptr(), out.data_ptr(), 64 if wk.dtype == torch.float64
                     else 32, threads())
    return out


def _host_apply_bwd(mod, grad, feat, wk, tb, k, need_feat, need_wt):
    """-> grad of feat (N, C, H, W) and of wk in wk's own layout (pairs, O, k*k, C)."""
    from ._host_kernels import threads
    n, c, h, w = feat.shape
    o = wk.shape[1]
    bits = 64 if wk.dtype == torch.float64 else 32
    g = grad.to(wk.dtype).contiguous()
    geom, keep = _host_geom(tb, n, c, h, w, g.shape[2], g.shape[3], o, k)
    g_feat = g_wk = None
    if need_feat:
        gf = torch.zeros((n, h, w, c), dtype=wk.dtype)
        mod.meta_upscale("feat", geom, g.data_ptr(), wk.data_ptr(), gf.data_ptr(), bits, threads())
        g_feat = gf.permute(0, 3, 1, 2).contiguous()
    if need_wt:
        f = feat.to(wk.dtype).permute(0, 2, 3, 1).contiguous()
        g_wk = torch.empty_like(wk)                                            # every class block written
        mod.meta_upscale("wt", geom, g.data_ptr(), f.data_ptr(), g_wk.data_ptr(), bits, threads())
    return g_feat, g_wk


def _torch_apply(feat, wt, tb, k, oh, ow):
    """out[n, o, i, j] = sum_K wt[pair(i, j), o, K] * unfold(feat)[n, K, idx_h[i], idx_w[j]]: one convolution
    where it fits (``_conv_fits``: x2, x4), else per row class (on the CPU the op takes the host kernel before
    this: ``_host``). (The order measured: DSCVSR training size, 10 x 64 x 40 x 40, one thread -- x4: convolution
    0.011 s forward / 0.020 s backward, host kernel 0.039 / 0.080; x3.7: host 0.23 / 0.48, per class 1.29 / 3.0.)"""
    if _conv_fits(tb, feat.shape[2], feat.shape[3], oh, ow):
        return _conv_apply(feat, wt, tb, k, oh, ow)
    n, c, h, w = feat.shape
    o = wt.shape[1]
    cols = F.unfold(feat.to(wt.dtype), k, padding=k // 2).view(n, -1, h, w)
    out = feat.new_empty((n, o, oh, ow), dtype=wt.dtype)
    dw = tb["off_w"].numel()
    wt4 = wt.reshape(-1, dw, o, wt.shape[2])
    cls_w, idx_w, idx_h = tb["cls_w"].long(), tb["idx_w"].long(), tb["idx_h"].long()
    for a in range(tb["off_h"].numel()):
        rows = tb["order_h"][tb["start_h"][a]:tb["start_h"][a + 1]].long()
        u = cols[:, :, idx_h[rows]][:, :, :, idx_w]  # (n, K, rows, ow)
        out[:, :, rows, :] = torch.einsum("nkij,jok->noij", u, wt4[a][cls_w])
    return out


def _torch_apply_bwd(grad, feat, wt, tb, k, need_feat, need_wt):
    if _conv_fits(tb, feat.shape[2], feat.shape[3], grad.shape[2], grad.shape[3]):
        return _conv_apply_bwd(grad, feat, wt, tb, k, need_feat, need_wt)
    n, c, h, w = feat.shape
    o, kk = wt.shape[1], wt.shape[2]
    cdt = wt.dtype
    cols = F.unfold(feat.to(cdt), k, padding=k // 2).view(n, -1, h, w)
    dw = tb["off_w"].numel()
    wt4 = wt.reshape(-1, dw, o, kk)
    g_cols = torch.zeros((n, kk, h * w), dtype=cdt, device=feat.device) if need_feat else None
    g_wt = torch.zeros_like(wt4) if need_wt else None
    cls_w, idx_w, idx_h = tb["cls_w"].long(), tb["idx_w"].long(), tb["idx_h"].long()
    g = grad.to(cdt)
    for a in range(tb["off_h"].numel()):
        rows = tb["order_h"][tb["start_h"][a]:tb["start_h"][a + 1]].long()
        ga = g[:, :, rows, :]  # (n, o, rows, ow)
        if need_feat:
            gu = torch.einsum("noij,jok->nkij", ga, wt4[a][cls_w])
            dst = (idx_h[rows][:, None] * w + idx_w[None, :]).reshape(-1)
            g_cols.index_add_(2, dst, gu.reshape(n, kk, -1))
        if need_wt:
            u = cols[:, :, idx_h[rows]][:, :, :, idx_w]
            g_wt[a].index_add_(0, cls_w, torch.einsum("nkij,noij->jok", u, ga))
    g_feat = F.fold(g_cols, (h, w), k, padding=k // 2) if need_feat else None
    return g_feat, (g_wt.view_as(wt) if need_wt else None)


# ============================================================================================ triton
if TRITON_OK:
    @triton.jit
    def _class_pixels(order_h, start_h, order_w, start_w, idx_h, idx_w, pair, e, DW):
        """Element e of offset class ``pair`` (its rows x its columns): output (i, j), LR (pr, qc), mask."""
        a = pair // DW
        b = pair % DW
        rs = tl.load(start_h + a)
        cs = tl.load(start_w + b)
        ncol = tl.load(start_w + b + 1) - cs
        total = (tl.load(start_h + a + 1) - rs) * ncol
        em = e < total
        i = tl.load(order_h + rs + e // ncol, mask=em, other=0)
        j = tl.load(order_w + cs + e % ncol, mask=em, other=0)
        pr = tl.load(idx_h + i, mask=em, other=0)
        qc = tl.load(idx_w + j, mask=em, other=0)
        return i, j, pr, qc, em

    @triton.jit
    def _fwd_kernel(feat_ptr, wt_ptr, idx_h, order_h, start_h, idx_w, order_w, start_w, out_ptr, C, H, W, OH, OW,
                    DW, O: tl.constexpr, K: tl.constexpr, DOT: tl.constexpr, CDT: tl.constexpr,
                    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
        """Per offset class a matrix product: out[:, pixels] = wt[pair] (O x C*k*k) @ patches (C*k*k x pixels).
        A program owns BLOCK_P pixels of one class of image n and loads the class's weights once per K chunk.
        DOT: 0 broadcast-sum (fp64), 1 fp32 ieee dot, 2 16-bit dot (tensor cores, fp32 accumulation)."""
        pair = tl.program_id(0)
        n = tl.program_id(2)
        e = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        i, j, pr, qc, em = _class_pixels(order_h, start_h, order_w, start_w, idx_h, idx_w, pair, e, DW)
        oo = tl.arange(0, BLOCK_O)
        om = oo < O
        KT = C * K * K
        wbase = wt_ptr + pair.to(tl.int64) * (O * KT)
        fimg = feat_ptr + n.to(tl.int64) * C * H * W
        acc = tl.zeros([BLOCK_O, BLOCK_P], dtype=CDT)
        for k0 in range(0, KT, BLOCK_K):
            kk = k0 + tl.arange(0, BLOCK_K)
            km = kk < KT
            c = kk // (K * K)
            hh = pr[None, :] + ((kk % (K * K)) // K - K // 2)[:, None]
            ww = qc[None, :] + (kk % K - K // 2)[:, None]
            ok = km[:, None] & em[None, :] & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            f = tl.load(fimg + c[:, None] * (H * W) + hh * W + ww, mask=ok, other=0.0)  # [BK, BP]
            wv = tl.load(wbase + oo[:, None] * KT + kk[None, :], mask=om[:, None] & km[None, :], other=0.0)
            if DOT == 2:
                acc += tl.dot(wv.to(f.dtype), f)
            elif DOT == 1:
                acc += tl.dot(wv.to(tl.float32), f.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.sum(wv.to(CDT)[:, :, None] * f.to(CDT)[None, :, :], axis=1)
        tl.store(out_ptr + n.to(tl.int64) * O * OH * OW + oo[:, None] * (OH * OW) + (i * OW + j)[None, :],
                 acc.to(out_ptr.dtype.element_ty), mask=om[:, None] & em[None, :])

    @triton.jit
    def _bwd_feat_kernel(g_ptr, wt_ptr, idx_h, cls_h, idx_w, cls_w, gfeat_ptr, C, H, W, OH, OW, DW,
                         O: tl.constexpr, K: tl.constexpr, CDT: tl.constexpr,
                         BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
        """gfeat[n, c, p+ky-1, q+kx-1] += sum_o g[n, o, i, j] * wt[pair, o, c*k*k + t] (relaxed atomics)."""
        n = tl.program_id(1)
        pix = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        pm = pix < OH * OW
        i = pix // OW
        j = pix % OW
        pr = tl.load(idx_h + i, mask=pm, other=0)
        qc = tl.load(idx_w + j, mask=pm, other=0)
        pair = tl.load(cls_h + i, mask=pm, other=0) * DW + tl.load(cls_w + j, mask=pm, other=0)
        oo = tl.arange(0, BLOCK_O)
        om = oo < O
        KT = C * K * K
        wrow = pair.to(tl.int64) * (O * KT)
        g = tl.load(g_ptr + n.to(tl.int64) * O * OH * OW + oo[:, None] * (OH * OW) + pix[None, :],
                    mask=om[:, None] & pm[None, :], other=0.0).to(CDT)
        img = n.to(tl.int64) * C * H * W
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + tl.arange(0, BLOCK_C)
            cm = cc < C
            for t in tl.static_range(K * K):
                hh = pr + (t // K - K // 2)
                ww = qc + (t % K - K // 2)
                ok = pm & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
                wv = tl.load(wt_ptr + wrow[None, None, :] + (oo[:, None, None] * KT + cc[None, :, None] * (K * K) + t),
                             mask=om[:, None, None] & cm[None, :, None] & pm[None, None, :], other=0.0).to(CDT)
                contrib = tl.sum(wv * g[:, None, :], axis=0)  # [BLOCK_C, BLOCK_P]
                tl.atomic_add(gfeat_ptr + img + cc[:, None] * (H * W) + (hh * W + ww)[None, :],
                              contrib, mask=cm[:, None] & ok[None, :], sem="relaxed")

    @triton.jit
    def _bwd_wt_kernel(g_ptr, feat_ptr, idx_h, order_h, start_h, idx_w, order_w, start_w, part_ptr,
                       N, C, H, W, OH, OW, DW, NPAIR, O: tl.constexpr, K: tl.constexpr, DOT: tl.constexpr,
                       CDT: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr):
        """part[s, pair, o, kk] = sum over split s of the class's (n, pixel) elements of g[n, o, px] * patch[n, kk, px]
        (a [O x P] @ [P x BLOCK_K] product per step); the caller sums the splits (fixed order, no atomics)."""
        pair = tl.program_id(0)
        s = tl.program_id(2)
        nsplit = tl.num_programs(2)
        a = pair // DW
        b = pair % DW
        total = (tl.load(start_h + a + 1) - tl.load(start_h + a)) * (tl.load(start_w + b + 1) - tl.load(start_w + b))
        chunk = tl.cdiv(tl.cdiv(N * total, nsplit), BLOCK_P) * BLOCK_P
        lo = s * chunk
        hi = tl.minimum(lo + chunk, N * total)
        KT = C * K * K
        kk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
        km = kk < KT
        c = kk // (K * K)
        dy = (kk % (K * K)) // K - K // 2
        dx = kk % K - K // 2
        oo = tl.arange(0, BLOCK_O)
        om = oo < O
        acc = tl.zeros([BLOCK_O, BLOCK_K], dtype=CDT)
        for e0 in range(lo, hi, BLOCK_P):
            e = e0 + tl.arange(0, BLOCK_P)
            n = (e // total).to(tl.int64)
            i, j, pr, qc, em = _class_pixels(order_h, start_h, order_w, start_w, idx_h, idx_w, pair, e % total, DW)
            em = em & (e < hi)
            g = tl.load(g_ptr + n[None, :] * (O * OH * OW) + oo[:, None] * (OH * OW) + (i * OW + j)[None, :],
                        mask=om[:, None] & em[None, :], other=0.0)  # [BO, BP]
            hh = pr[:, None] + dy[None, :]
            ww = qc[:, None] + dx[None, :]
            ok = em[:, None] & km[None, :] & (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            f = tl.load(feat_ptr + n[:, None] * (C * H * W) + c[None, :] * (H * W) + hh * W + ww, mask=ok,
                        other=0.0)  # [BP, BK]
            if DOT == 2:
                acc += tl.dot(g, f)
            elif DOT == 1:
                acc += tl.dot(g.to(tl.float32), f.to(tl.float32), input_precision="ieee")
            else:
                acc += tl.sum(g.to(CDT)[:, :, None] * f.to(CDT)[None, :, :], axis=1)
        tl.store(part_ptr + (s.to(tl.int64) * NPAIR + pair) * (O * KT) + oo[:, None] * KT + kk[None, :], acc,
                 mask=om[:, None] & km[None, :])


def _dot_mode(dtype: torch.dtype) -> int:
    return 0 if dtype == torch.float64 else 1 if dtype == torch.float32 else 2


def _dot_blocks(o: int, dot: int, npix: int):
    """(BLOCK_O, BLOCK_K, BLOCK_P): tl.dot needs every dimension >= 16; fp64 keeps the 3-D tile small."""
    bo = max(16, next_pow2(o)) if dot else next_pow2(o)
    if dot == 0:
        return bo, 16, interpret_or(min(256, max(16, next_pow2(npix))), 32)
    return bo, 64, interpret_or(min(256, max(16, next_pow2(npix))), 64)


def _wt_split(pairs: int, kblocks: int, elems: int, bp: int) -> int:
    """Splits of each class's (n, pixel) reduction: about 1024 programs in all, each with >= 8 pixel blocks."""
    return max(1, min(cdiv(1024, pairs * kblocks), cdiv(elems, 8 * bp), 65535))


def _wt_blocks(o: int, dot: int, npix: int):
    """(BLOCK_O, BLOCK_K, BLOCK_P) of the weight backward: the forward's, with at most 32 weight columns per program
    on a GPU (its [BLOCK_P, BLOCK_K] gather of 64-bit addresses at 64 columns sits at 255 registers and spills in
    16-bit at sm_80 / sm_90 for some O; at 32: 138-220, no spills, scripts/aot_kernels.py)."""
    bo, bk, bp = _dot_blocks(o, dot, npix)
    return bo, interpret_or(bk, min(bk, 32)), bp


def _blocks(c, o, npix):
    """(outputs, channel block, pixel block, num_warps) of the feature backward; the interpreter: few, large
    programs. On a GPU the [BLOCK_O, BLOCK_C, BLOCK_P] tile keeps BLOCK_O x BLOCK_C <= 32 (at most 64 for O > 32),
    8 warps: larger tiles spill in 16-bit with triton 3.6 (the H200's), even at O = 3 with the old 4 x 16 x 64."""
    bo = next_pow2(o)
    return bo, interpret_or(min(next_pow2(c), 16), max(1, min(16, 32 // bo))), \
        interpret_or(min(1024, max(16, next_pow2(npix))), 64), interpret_or(4, 8)


MAX_O_TRITON = 64  # the triton kernels hold all O outputs in one block: more would spill (and is never used)


def _check_int32(c, h, w, o, oh, ow):
    """The triton kernels index within one image in 32 bits (the image offset is 64-bit), and hold all O outputs
    in one block (O <= MAX_O_TRITON: every such configuration is compiled by scripts/aot_triton.py's sweep)."""
    if c * h * w >= 2 ** 31 or o * oh * ow >= 2 ** 31 or o * c * 9 * 64 >= 2 ** 31:
        raise ValueError(f"meta_upscale (triton): one image of {c}x{h}x{w} -> {o}x{oh}x{ow} needs 64-bit indexing "
                         "within an image; use the torch or cuda backend")
    if o > MAX_O_TRITON:
        raise ValueError(f"meta_upscale (triton): out_channels {o} > {MAX_O_TRITON}; use the torch or cuda backend")


def _triton_apply(feat, wt, tb, k, oh, ow):
    n, c, h, w = feat.shape
    o = wt.shape[1]
    _check_int32(c, h, w, o, oh, ow)
    out = feat.new_empty((n, o, oh, ow))
    dot = _dot_mode(feat.dtype)
    bo, bk, bp = _dot_blocks(o, dot, tb["max_pix"])
    _fwd_kernel[(wt.shape[0], cdiv(tb["max_pix"], bp), n)](
        feat, wt, tb["idx_h"], tb["order_h"], tb["start_h"], tb["idx_w"], tb["order_w"], tb["start_w"], out, c, h, w,
        oh, ow, tb["off_w"].numel(), O=o, K=k, DOT=dot, CDT=tl_acc(feat.dtype), BLOCK_O=bo, BLOCK_K=bk, BLOCK_P=bp,
        num_warps=8 if bo >= 64 else 4)  # 64 outputs on 4 warps spill in 16-bit (triton 3.6)
    return out


def _triton_apply_bwd(grad, feat, wt, tb, k, need_feat, need_wt):
    n, c, h, w = feat.shape
    o, kt = wt.shape[1], wt.shape[2]
    oh, ow = grad.shape[2:]
    _check_int32(c, h, w, o, oh, ow)
    dw = tb["off_w"].numel()
    g_feat = g_wt = None
    if need_feat:
        bo, bc, bp, nw = _blocks(c, o, oh * ow)
        g_feat = torch.zeros(feat.shape, dtype=wt.dtype, device=feat.device)
        _bwd_feat_kernel[(cdiv(oh * ow, bp), n)](grad, wt, tb["idx_h"], tb["cls_h"], tb["idx_w"], tb["cls_w"], g_feat,
                                                 c, h, w, oh, ow, dw, O=o, K=k, CDT=tl_acc(feat.dtype),
                                                 BLOCK_O=bo, BLOCK_C=bc, BLOCK_P=bp, num_warps=nw)
    if need_wt:
        dot = _dot_mode(feat.dtype)
        bo, bk, bp = _wt_blocks(o, dot, n * tb["max_pix"])
        pairs, kb = wt.shape[0], cdiv(kt, bk)
        split = _wt_split(pairs, kb, n * tb["max_pix"], bp)
        part = torch.empty((split,) + tuple(wt.shape), dtype=wt.dtype, device=feat.device)
        _bwd_wt_kernel[(pairs, kb, split)](grad, feat, tb["idx_h"], tb["order_h"], tb["start_h"], tb["idx_w"],
                                           tb["order_w"], tb["start_w"], part, n, c, h, w, oh, ow, dw, pairs, O=o,
                                           K=k, DOT=dot, CDT=tl_acc(feat.dtype), BLOCK_O=bo, BLOCK_K=bk, BLOCK_P=bp)
        g_wt = part.sum(0) if split > 1 else part[0]
    return g_feat, g_wt


# ============================================================================================ cuda
def _cuda_apply(feat, wt, tb, k, oh, ow):
    n, c, h, w = feat.shape
    o = wt.shape[1]
    out = feat.new_empty((n, o, oh, ow))
    _cuda.call("meta_upscale_fwd", feat, wt, tb["idx_h"], tb["cls_h"], tb["idx_w"], tb["cls_w"], out, n, c, h, w,
               oh, ow, tb["off_w"].numel(), o, k, CUDA_DTYPE[feat.dtype])
    return out


def _cuda_apply_bwd(grad, feat, wt, tb, k, need_feat, need_wt):
    n, c, h, w = feat.shape
    o = wt.shape[1]
    oh, ow = grad.shape[2:]
    g_feat = torch.zeros(feat.shape, dtype=wt.dtype, device=feat.device) if need_feat else None
    g_wt = torch.empty_like(wt) if need_wt else None
    _cuda.call("meta_upscale_bwd", grad, feat, wt, tb["idx_h"], tb["cls_h"], tb["order_h"], tb["start_h"],
               tb["idx_w"], tb["cls_w"], tb["order_w"], tb["start_w"], g_feat, g_wt, n, c, h, w, oh, ow,
               tb["off_h"].numel(), tb["off_w"].numel(), o, k, CUDA_DTYPE[feat.dtype])
    return g_feat, g_wt


# ============================================================================================ custom op
_APPLY = {"triton": (_triton_apply, _triton_apply_bwd), "cuda": (_cuda_apply, _cuda_apply_bwd),
          "cupy": (_cuda.routed("cupy", _cuda_apply), _cuda.routed("cupy", _cuda_apply_bwd))}


@torch.library.custom_op("vsr_engine::meta_upscale", mutates_args=())
def _meta_op(feat: torch.Tensor, scale: float, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
             b2: torch.Tensor, out_channels: int, kernel_size: int, backend: str,
             mlp_lowp: bool = False) -> torch.Tensor:
    feat = feat.contiguous()
    n, c, h, w = feat.shape
    oh, ow = meta_out_size(h, w, scale)
    tb = _tables(h, w, scale, feat.device)
    cdt = acc_dtype(feat.dtype)
    # the op computes in cdt on every backend: an autocast region around the call must not turn the MLP and the
    # torch path's matmuls / convolutions into 16-bit ones (the backward, run outside autocast, would then see
    # other weights than the forward used); ``mlp_lowp``: the MLP alone in its 16-bit parameters' dtype, forward
    # and backward alike
    with torch.autocast(feat.device.type, enabled=False):
        mod = _host(backend, feat, cdt, tb, oh, ow)
        (inp, z1, hid, _, _), wt = _pair_weights(scale, tb, w1, b1, w2, b2, _mlp_dtype(w2, cdt, mlp_lowp), cdt,
                                                 out_channels, kernel_size, c, mod is not None, backend in _APPLY)
        if getattr(_local, "keep", False):     # for this call's backward (``_setup_context``): no MLP recompute
            _local.stash = (_call_key(feat, scale, w1, b1, w2, b2), (wt, z1, hid))
        if mod is not None:
            return _host_apply(mod, feat, wt, tb, kernel_size, oh, ow).to(feat.dtype)
        apply = _APPLY.get(backend, (_torch_apply, None))[0]
        return apply(feat, wt, tb, kernel_size, oh, ow).to(feat.dtype)


@_meta_op.register_fake
def _(feat, scale, w1, b1, w2, b2, out_channels, kernel_size, backend, mlp_lowp=False):
    oh, ow = meta_out_size(feat.shape[2], feat.shape[3], scale)
    return feat.new_empty((feat.shape[0], out_channels, oh, ow))


@torch.library.custom_op("vsr_engine::meta_upscale_backward", mutates_args=())
def _meta_bwd_op(grad: torch.Tensor, feat: torch.Tensor, scale: float, w1: torch.Tensor, b1: torch.Tensor,
                 w2: torch.Tensor, b2: torch.Tensor, out_channels: int, kernel_size: int, need: list[bool],
                 backend: str, mlp_lowp: bool = False, wt_saved: Optional[torch.Tensor] = None,
                 z1_saved: Optional[torch.Tensor] = None, hid_saved: Optional[torch.Tensor] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients for (feat, w1, b1, w2, b2); empty where ``need`` is False. ``*_saved``: the forward's per-pair
    weights and MLP activations (else the MLP is recomputed: the same values)."""
    grad, feat = grad.contiguous(), feat.contiguous()
    n, c, h, w = feat.shape
    tb = _tables(h, w, scale, feat.device)
    cdt = acc_dtype(feat.dtype)
    with torch.autocast(feat.device.type, enabled=False):      # as the forward: the same weights, in cdt
        mdt = _mlp_dtype(w2, cdt, mlp_lowp)
        need_wt = any(need[1:])
        mod = _host(backend, feat, cdt, tb, grad.shape[2], grad.shape[3])
        if wt_saved is not None:
            wt, z1, hid, w2u, inv = wt_saved, z1_saved, hid_saved, w2, None
            inp = _mlp_input(scale, tb["off_h"], tb["off_w"], mdt)
            if mod is not None:
                perm, inv = _host_perm(c, out_channels, kernel_size, w2.device)
                w2u = w2[perm]
        else:
            (inp, z1, hid, w2u, inv), wt = _pair_weights(scale, tb, w1, b1, w2, b2, mdt, cdt, out_channels,
                                                         kernel_size, c, mod is not None, backend in _APPLY)
        if mod is not None:
            g_feat, g_wt = _host_apply_bwd(mod, grad, feat, wt, tb, kernel_size, need[0], need_wt)
        else:
            bwd = _APPLY.get(backend, (None, _torch_apply_bwd))[1]
            g_feat, g_wt = bwd(grad, feat, wt, tb, kernel_size, need[0], need_wt)
        gw = (None,) * 4
        if need_wt:   # to the MLP's output order: the host layout is w2u's rows; (pairs, O, K) -> K * O + o
            g_out = g_wt.reshape(g_wt.shape[0], -1) if mod is not None else \
                g_wt.transpose(1, 2).reshape(g_wt.shape[0], -1)
            gw1, gb1, gw2, gb2 = _mlp_backward(g_out.to(mdt), inp, z1, hid, w1, w2u, need)
            if inv is not None:   # the permuted last layer's gradients back to w2 / b2's row order
                gw2, gb2 = (g[inv] if g is not None else None for g in (gw2, gb2))
            gw = (gw1, gb1, gw2, gb2)
    outs = [g_feat] + list(gw)
    refs = (feat, w1, b1, w2, b2)
    return tuple(g.to(r.dtype) if (want and g is not None) else feat.new_empty(0)
                 for g, r, want in zip(outs, refs, need))


@_meta_bwd_op.register_fake
def _(grad, feat, scale, w1, b1, w2, b2, out_channels, kernel_size, need, backend, mlp_lowp=False, wt_saved=None,
      z1_saved=None, hid_saved=None):
    return tuple(r.new_empty(r.shape) if want else feat.new_empty(0) for r, want in zip((feat, w1, b1, w2, b2), need))


def _call_key(feat, scale, w1, b1, w2, b2):
    return (tuple(feat.shape), feat.dtype, scale) + tuple((t.data_ptr(), t._version, t.dtype) for t in (w1, b1, w2, b2))


def _setup_context(ctx, inputs, output):
    feat, ctx.scale, w1, b1, w2, b2, ctx.o, ctx.k, ctx.backend, ctx.mlp_lowp = inputs
    stash, _local.stash = getattr(_local, "stash", None), None
    saved = stash[1] if stash is not None and stash[0] == _call_key(feat, ctx.scale, w1, b1, w2, b2) else (None,) * 3
    ctx.n_saved = sum(t is not None for t in saved)
    ctx.save_for_backward(feat, w1, b1, w2, b2, *(t for t in saved if t is not None))


def _backward(ctx, grad):
    feat, w1, b1, w2, b2, *saved = ctx.saved_tensors
    nig = ctx.needs_input_grad
    need = [bool(nig[0]), bool(nig[2]), bool(nig[3]), bool(nig[4]), bool(nig[5])]
    wt, z1, hid = saved if len(saved) == 3 else (None, None, None)
    g = _meta_bwd_op(grad, feat, ctx.scale, w1, b1, w2, b2, ctx.o, ctx.k, need, ctx.backend, ctx.mlp_lowp, wt, z1,
                     hid)
    gf, gw1, gb1, gw2, gb2 = (t if want else None for t, want in zip(g, need))
    return gf, None, gw1, gb1, gw2, gb2, None, None, None, None


_meta_op.register_autograd(_backward, setup_context=_setup_context)


# ============================================================================================ public
def meta_upscale(feat: torch.Tensor, scale: float, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                 b2: torch.Tensor, out_channels: int = 3, kernel_size: int = 3, mlp_lowp: bool = False) -> torch.Tensor:
    """Meta-Upscale of ``feat`` (N, C, H, W) by ``scale`` -> (N, out_channels, int(scale*H), int(scale*W)).

    The op computes in fp32 (fp64 for fp64 input) whatever the input dtype; ``mlp_lowp=True`` runs the weight MLP
    alone in its 16-bit parameters' dtype (fp32 accumulation, as an autocast ``nn.Linear``), forward and backward
    alike:
    the CPU training plan's choice, where the MLP over every offset pair is a fixed cost per call."""
    scale = float(scale)
    feat, w1, b1, w2, b2 = autocast_inputs(feat, w1, b1, w2, b2)
    _check(feat, scale, w1, b1, w2, b2, out_channels, kernel_size)
    # with gradients to come, the forward hands its per-pair weights and MLP activations to the backward (the MLP
    # over every offset pair is then computed once per call, not twice); not under torch.compile (recomputed there)
    _local.keep = (torch.is_grad_enabled() and any(t.requires_grad for t in (feat, w1, b1, w2, b2))
                   and not torch.compiler.is_compiling())
    try:
        return _meta_op(feat, scale, w1, b1, w2, b2, int(out_channels), int(kernel_size),
                        pick("meta_upscale", feat), bool(mlp_lowp))
    finally:
        _local.keep = False
        _local.stash = None
