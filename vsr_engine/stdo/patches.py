"""Patch grid, difficulty chunking and the JSTDO data mix.

Geometry. A frame of LR size (H, W) is cut into a ``gw`` x ``gh`` grid of cells; cell (i, j) covers rows
``ys[i]:ys[i+1]`` and columns ``xs[j]:xs[j+1]`` with ``ys[i] = i*H // gh``, ``xs[j] = j*W // gw`` (cells differ by
at most one pixel when the size does not divide). The STDO code uses 1080p HR with a 20x10 grid at x2 and 10x5 at
x4, i.e. LR cells 48 wide x 54 high (and 64x60 at x3); :func:`default_grid` keeps that cell size for any frame.

Each cell is super-resolved from a *window*: the cell plus ``margin`` LR pixels of context on every side, all
windows of one frame having the same size (``cell_h_max + 2m``, ``cell_w_max + 2m``) so they batch. The frame is
replicate-padded so windows at the border exist; the output is cropped back to the cell (no blending needed:
with enough context the cell's output equals the whole-frame output, see the seam measurement in the bench).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# LR cell size (width, height) of the STDO code per scale (1080p HR: 20x10 grid at x2, 10x5 at x4, 64x60 at x3)
PAPER_CELL = {2: (48, 54), 3: (64, 60), 4: (48, 54)}


def default_grid(lr_w: int, lr_h: int, scale: int) -> Tuple[int, int]:
    """(gw, gh): the grid whose cells are closest to the paper's LR cell size for this scale."""
    cw, ch = PAPER_CELL.get(int(scale), (48, 54))
    return max(1, int(round(lr_w / cw))), max(1, int(round(lr_h / ch)))


@dataclasses.dataclass(frozen=True)
class PatchGrid:
    lr_h: int
    lr_w: int
    gh: int
    gw: int
    scale: int
    margin: int = 4

    def __post_init__(self):
        if not (1 <= self.gh <= self.lr_h and 1 <= self.gw <= self.lr_w):
            raise ValueError(f"grid {self.gw}x{self.gh} does not fit a {self.lr_w}x{self.lr_h} LR frame")
        if self.margin < 0:
            raise ValueError("margin must be >= 0")

    @classmethod
    def for_frame(cls, lr_h: int, lr_w: int, scale: int, grid: Optional[Tuple[int, int]] = None, margin: int = 4):
        gw, gh = grid if grid else default_grid(lr_w, lr_h, scale)
        return cls(lr_h, lr_w, int(gh), int(gw), int(scale), int(margin))

    @property
    def ys(self) -> List[int]:
        return [i * self.lr_h // self.gh for i in range(self.gh + 1)]

    @property
    def xs(self) -> List[int]:
        return [j * self.lr_w // self.gw for j in range(self.gw + 1)]

    @property
    def n_cells(self) -> int:
        return self.gh * self.gw

    @property
    def cell_max(self) -> Tuple[int, int]:
        ys, xs = self.ys, self.xs
        return max(b - a for a, b in zip(ys, ys[1:])), max(b - a for a, b in zip(xs, xs[1:]))

    @property
    def window(self) -> Tuple[int, int]:
        ch, cw = self.cell_max
        return ch + 2 * self.margin, cw + 2 * self.margin

    def cells(self):
        """Yield (index, y0, y1, x0, x1) in LR pixels, row-major (index = i*gw + j)."""
        ys, xs = self.ys, self.xs
        for i in range(self.gh):
            for j in range(self.gw):
                yield i * self.gw + j, ys[i], ys[i + 1], xs[j], xs[j + 1]

    def to_dict(self) -> Dict:
        ch, cw = self.cell_max
        return {"lr_h": self.lr_h, "lr_w": self.lr_w, "gh": self.gh, "gw": self.gw, "scale": self.scale,
                "margin": self.margin, "cell_h_max": ch, "cell_w_max": cw,
                "hr_h": self.lr_h * self.scale, "hr_w": self.lr_w * self.scale}

    @classmethod
    def from_dict(cls, d: Dict) -> "PatchGrid":
        return cls(int(d["lr_h"]), int(d["lr_w"]), int(d["gh"]), int(d["gw"]), int(d["scale"]), int(d["margin"]))

    # ---- tensors -------------------------------------------------------------------------------------------
    def windows(self, lr: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) LR frames -> (B * n_cells, C, win_h, win_w) windows (frame-major, then row-major cells)."""
        b, c, h, w = lr.shape
        if (h, w) != (self.lr_h, self.lr_w):
            raise ValueError(f"frame {w}x{h} does not match the grid's {self.lr_w}x{self.lr_h}")
        m = self.margin
        wh, ww = self.window
        # pad so every window [y0 - m, y0 - m + wh) lies inside: top/left m, bottom/right m + 1 (cells differ
        # by at most one pixel, so the last window overhangs the frame by at most m + 1)
        x = F.pad(lr, (m, m + 1, m, m + 1), mode="replicate")
        out = [x[:, :, y0:y0 + wh, x0:x0 + ww] for _, y0, _, x0, _ in self.cells()]
        return torch.stack(out, 1).reshape(b * self.n_cells, c, wh, ww)

    def assemble(self, sr_windows: torch.Tensor, batch: int = 1) -> torch.Tensor:
        """Inverse of :meth:`windows` on the x``scale`` outputs: crop each window to its cell, paste into frames."""
        s, m = self.scale, self.margin
        n, c = sr_windows.shape[:2]
        if n != batch * self.n_cells:
            raise ValueError(f"{n} windows for {batch} frames of {self.n_cells} cells")
        sw = sr_windows.reshape(batch, self.n_cells, c, *sr_windows.shape[2:])
        out = sr_windows.new_empty(batch, c, self.lr_h * s, self.lr_w * s)
        for k, y0, y1, x0, x1 in self.cells():
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = sw[:, k, :, m * s:m * s + (y1 - y0) * s, m * s:m * s + (x1 - x0) * s]
        return out

    def cell_boundaries_mask(self, band: int = 2) -> np.ndarray:
        """HR boolean mask of pixels within ``band`` HR pixels of an inner cell boundary (for seam PSNR)."""
        s = self.scale
        mask = np.zeros((self.lr_h * s, self.lr_w * s), bool)
        for y in self.ys[1:-1]:
            mask[max(0, y * s - band):y * s + band, :] = True
        for x in self.xs[1:-1]:
            mask[:, max(0, x * s - band):x * s + band] = True
        return mask


# ---- labels and chunks ---------------------------------------------------------------------------------------

def quantile_chunks(labels: np.ndarray, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """Split patches into ``k`` equal-count chunks by their PSNR label (chunk 0 = lowest PSNR = hardest).

    Patches are ranked by (label, flat index) -- a stable sort, so ties are broken deterministically -- and the
    patch of rank r goes to chunk ``r * k // N``: chunk sizes differ by at most one and every label in chunk c is
    <= every label in chunk c+1. Returns (chunk ids as uint8 with ``labels``' shape, the k-1 thresholds: the
    midpoint between the last label of chunk c and the first of chunk c+1).
    """
    labels = np.asarray(labels, dtype=np.float64)
    if not 1 <= k <= 255:
        raise ValueError("k must be in [1, 255]")
    flat = labels.reshape(-1)
    n = flat.size
    if n < k:
        raise ValueError(f"{n} patches cannot make {k} chunks")
    if not np.all(np.isfinite(flat)):
        flat = np.nan_to_num(flat, nan=np.inf, posinf=1e9)  # exact (infinite PSNR) patches are the easiest
    order = np.argsort(flat, kind="stable")
    chunk = np.empty(n, np.uint8)
    chunk[order] = (np.arange(n) * k // n).astype(np.uint8)
    sorted_l = flat[order]
    bounds = [(c * n + k - 1) // k for c in range(1, k)]  # first rank of chunk c
    thresholds = np.array([(sorted_l[b - 1] + sorted_l[b]) / 2 for b in bounds], np.float64)
    return chunk.reshape(labels.shape), thresholds


def check_mix_fractions(fractions: Optional[Sequence[float]], k: int) -> List[float]:
    """The JSTDO mix fractions for ``k`` chunks (default: the paper's ``1 - c/(k-1)``), checked: one per chunk,
    each in [0, 1], not all zero. Raises ValueError with what is wrong."""
    if fractions is None:
        return [1.0] if k == 1 else [1.0 - c / (k - 1) for c in range(k)]
    try:
        fr = [float(x) for x in fractions]
    except (TypeError, ValueError):
        raise ValueError(f"JSTDO mix fractions must be numbers, got {fractions!r}") from None
    if len(fr) != k:
        raise ValueError(f"the JSTDO mix needs one fraction per chunk: {k} for {k} chunks, got {len(fr)}")
    bad = [x for x in fr if not (0.0 <= x <= 1.0)]
    if bad:
        raise ValueError(f"JSTDO mix fractions must lie in [0, 1], got {bad[0]!r}")
    if not any(x > 0 for x in fr):
        raise ValueError("the JSTDO mix fractions are all 0: the joint model would train on nothing")
    return fr


def jstdo_mix(chunks: np.ndarray, k: int, seed: int = 0, fractions: Optional[Sequence[float]] = None) -> np.ndarray:
    """Data-aware joint training set (JSTDO): flat indices of the patches one joint model trains on.

    All of chunk 0 (hardest), none of chunk k-1 (easiest), and a random subset of each chunk in between:
    by default fraction ``1 - c/(k-1)`` of chunk c (linear from 1 to 0; k=4: 2/3 of chunk 1, 1/3 of chunk 2).
    ``fractions`` (length k, checked by :func:`check_mix_fractions`) overrides; a positive fraction keeps at least
    one patch. With k = 1 the mix is everything.
    """
    flat = np.asarray(chunks).reshape(-1)
    fractions = check_mix_fractions(fractions, k)
    rng = np.random.default_rng(seed)
    keep = []
    for c in range(k):
        idx = np.flatnonzero(flat == c)
        take = int(round(float(fractions[c]) * idx.size))
        if fractions[c] > 0 and idx.size:
            take = max(1, take)       # a positive fraction keeps at least one patch of its chunk
        if take >= idx.size:
            keep.append(idx)
        elif take > 0:
            keep.append(np.sort(rng.choice(idx, take, replace=False)))
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
