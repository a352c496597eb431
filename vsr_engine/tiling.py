"""Spatial tiling of a window processor: each tile is run with ``pad`` LR pixels of context on every inner side and
cropped back, so the result is seamless; every tile keeps its own recurrent state across windows.

``TiledProcessor`` has the interface of the Engine's window processors (``reset``, ``state``, ``load_state``,
``left_context``, ``process``). Tiles run one after another (only one tile's features are alive); the window's
output is assembled in a uint8 canvas on the frames' device, quantised exactly as the Engine quantises its output, so the
Engine's own conversion gives back the same bytes. Tile origins sit on multiples of ``align_of(scale)`` LR pixels
so that they map to whole output pixels (any scale of the form p/q).

``DEFAULT_PAD``: bench/bench_memory.py on Big Buck Bunny (official BasicVSR, see bench/results/memory_cpu.json).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import torch

from .ops.meta_upscale import meta_out_size

__all__ = ["DEFAULT_PAD", "TiledProcessor", "align_of", "tile_boxes", "convert_state", "clone_processor"]

DEFAULT_PAD = 16

Box = Tuple[int, int, int, int]   # y0, y1, x0, x1


def align_of(scale: float) -> int:
    """Smallest q such that q * scale is a whole number (tile origins on multiples of q map to whole pixels)."""
    for q in range(1, 101):
        if abs(q * scale - round(q * scale)) < 1e-6:
            return q
    return 100


def _cuts(n: int, parts: int, q: int) -> List[int]:
    cuts = [0]
    for k in range(1, parts):
        c = int(round(k * n / parts / q)) * q
        cuts.append(min(max(c, cuts[-1] + q), n))
    cuts.append(n)
    return cuts


def tile_boxes(h: int, w: int, grid: Tuple[int, int], pad: int, q: int = 1) -> List[Tuple[Box, Box]]:
    """[(core box, padded box)] row by row; padded = core grown by ``pad`` and clipped to the frame."""
    ys, xs = _cuts(h, grid[0], q), _cuts(w, grid[1], q)
    out = []
    for i in range(grid[0]):
        for j in range(grid[1]):
            core = (ys[i], ys[i + 1], xs[j], xs[j + 1])
            padded = (max(0, core[0] - pad), min(h, core[1] + pad), max(0, core[2] - pad), min(w, core[3] + pad))
            out.append((core, padded))
    return out


def clone_processor(proc):
    """A fresh processor of the same kind sharing the model (no state)."""
    if hasattr(proc, "clone"):
        return proc.clone()
    if hasattr(proc, "core"):
        return type(proc)(proc.core, proc.cleaner, getattr(proc, "max_flow_cache", 64))
    if hasattr(proc, "model"):
        return type(proc)(proc.model, proc.overlap)
    raise TypeError(f"cannot tile a {type(proc).__name__}")


def _quantise(y: torch.Tensor) -> torch.Tensor:
    # exactly the Engine's conversion, so (q / 255) converted again gives q
    return y.float().clamp_(0, 1).mul_(255.0).round_().to(torch.uint8)


class TiledProcessor:
    def __init__(self, proc, h: int, w: int, grid: Tuple[int, int], pad: int, scale: float):
        self.h, self.w, self.grid, self.pad, self.scale = h, w, tuple(grid), int(pad), float(scale)
        self.q = align_of(self.scale)
        if self.pad % self.q:
            raise ValueError(f"pad {pad} is not a multiple of {self.q} (scale {scale})")
        self.boxes = tile_boxes(h, w, self.grid, self.pad, self.q)
        self.tiles = [clone_processor(proc) for _ in self.boxes]
        self.out_h, self.out_w = meta_out_size(h, w, self.scale)

    def _key(self) -> List[int]:
        return [self.h, self.w, self.grid[0], self.grid[1], self.pad, self.q]

    def _o(self, v: int, full: int, out_full: int) -> int:
        return out_full if v == full else int(round(v * self.scale))

    def reset(self):
        for t in self.tiles:
            t.reset()

    def left_context(self) -> int:
        return self.tiles[0].left_context()

    def state(self) -> Optional[dict]:
        sts = [t.state() for t in self.tiles]
        if all(s is None for s in sts):
            return None
        out = {"tile_grid": torch.tensor(self._key())}
        for i, st in enumerate(sts):
            for k, v in (st or {}).items():
                out[f"t{i}.{k}"] = v
        return out

    def load_state(self, st: Optional[dict], device, dtype):
        if st is None:
            self.reset()
            return
        g = [int(v) for v in st["tile_grid"].tolist()]
        if g != self._key():
            raise ValueError(f"state is for tiles {g}, not {self._key()}")
        for i, t in enumerate(self.tiles):
            sub = {k.split(".", 1)[1]: v for k, v in st.items() if k.startswith(f"t{i}.")}
            if sub:
                t.load_state(sub, device, dtype)
            else:
                t.reset()

    def process(self, x: torch.Tensor, s: int, n_emit: int, left: int = 0) -> Iterator[Tuple[int, torch.Tensor]]:
        canvas = torch.empty(n_emit, 3, self.out_h, self.out_w, dtype=torch.uint8, device=x.device)
        for t, (core, box) in zip(self.tiles, self.boxes):
            xt = x[..., box[0]:box[1], box[2]:box[3]].contiguous()
            oy0, oy1 = self._o(core[0], self.h, self.out_h), self._o(core[1], self.h, self.out_h)
            ox0, ox1 = self._o(core[2], self.w, self.out_w), self._o(core[3], self.w, self.out_w)
            ry0 = oy0 - self._o(box[0], self.h, self.out_h)
            rx0 = ox0 - self._o(box[2], self.w, self.out_w)
            for i, y in t.process(xt, s, n_emit, left):
                crop = y[:, ry0:ry0 + oy1 - oy0, rx0:rx0 + ox1 - ox0]
                canvas[i - s, :, oy0:oy1, ox0:ox1] = _quantise(crop)
                del y, crop
            del xt
        for k in range(n_emit):
            yield s + k, canvas[k].float().div_(255.0)


# ---------------------------------------------------------------------------------------------------------------
# State layouts: whole frame <-> tiles
# ---------------------------------------------------------------------------------------------------------------
def _is_spatial(v: torch.Tensor, hw: Tuple[int, int]) -> bool:
    return v.dim() >= 2 and tuple(v.shape[-2:]) == hw


def merge_state(st: dict) -> dict:
    """A tiled state -> the whole-frame state (each tile's core region pasted; other entries from tile 0)."""
    h, w, ny, nx, pad, q = [int(v) for v in st["tile_grid"].tolist()]
    keys = sorted({k.split(".", 1)[1] for k in st if k.startswith("t") and "." in k})
    boxes = tile_boxes(h, w, (ny, nx), pad, q)
    out: Dict[str, torch.Tensor] = {}
    for k in keys:
        first = st.get(f"t0.{k}")
        if first is None:
            continue
        b0 = boxes[0][1]
        if _is_spatial(first, (b0[1] - b0[0], b0[3] - b0[2])):
            full = first.new_zeros(*first.shape[:-2], h, w)
            for i, (core, box) in enumerate(boxes):
                v = st[f"t{i}.{k}"]
                full[..., core[0]:core[1], core[2]:core[3]] = \
                    v[..., core[0] - box[0]:core[1] - box[0], core[2] - box[2]:core[3] - box[2]]
            out[k] = full
        else:
            out[k] = first
    return out


def split_state(full: dict, h: int, w: int, grid: Tuple[int, int], pad: int, q: int) -> dict:
    out = {"tile_grid": torch.tensor([h, w, grid[0], grid[1], pad, q])}
    for i, (_, box) in enumerate(tile_boxes(h, w, grid, pad, q)):
        for k, v in full.items():
            out[f"t{i}.{k}"] = (v[..., box[0]:box[1], box[2]:box[3]].contiguous() if _is_spatial(v, (h, w))
                                else v)
    return out


def convert_state(st: Optional[dict], h: int, w: int, grid: Optional[Tuple[int, int]], pad: int,
                  scale: float = 1.0) -> Optional[dict]:
    """``st`` (whole-frame or tiled) in the layout for ``grid`` (None: whole frame)."""
    if st is None:
        return None
    if "tile_grid" in st:
        g = [int(v) for v in st["tile_grid"].tolist()]
        if grid is not None and g == [h, w, grid[0], grid[1], pad, align_of(scale)]:
            return st
        st = merge_state(st)
    if grid is None:
        return st
    return split_state(st, h, w, grid, pad, align_of(scale))
