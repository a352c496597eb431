"""Memory-aware window planning and allocation back-off for the streaming Engine.

Before the first window the :class:`Governor` (a window processor wrapping the Engine's own) estimates the bytes a
window needs from the frame size, the model, the dtype and the device (:func:`estimate`), compares that with what
is free (:func:`free_memory`: CUDA ``mem_get_info``, host ``MemAvailable``) and picks (:func:`plan`):

1. the largest window from the requested one down to :data:`MIN_WINDOW` that fits, untiled;
2. otherwise spatial tiles (``vsr_engine.tiling``), the fewest that fit, each with the largest window that fits;
3. otherwise one :class:`~vsr_engine.video.VsrInputError` before any work, naming the size and the way out.

If an allocation still fails while a window runs (CUDA OOM, the CPU allocator's "can't allocate memory"), the
Governor restores the processor state saved at the start of that window, backs off (half the window down to
``MIN_WINDOW``, then more tiles) and recomputes the window; frames it had already delivered are computed again for
the recurrent state but not delivered twice, so every frame comes out exactly once, in order.

``MIN_WINDOW``: bench/results/window_walk.json and window_walk_small.json (Vid4 walk, official BasicVSR, overlap 8):
window 16 is 0.009 dB and window 8 0.015 dB below the whole-sequence result, both within 0.05 dB.
"""
from __future__ import annotations

import dataclasses
import gc
import math
import os
from typing import Iterator, List, Optional, Tuple

import torch

from .io.common import VsrError, VsrInputError

__all__ = ["MIN_WINDOW", "Plan", "estimate", "free_memory", "plan", "Governor", "is_alloc_failure",
           "parse_bytes"]

MIN_WINDOW = 8           # smallest window the planner picks by itself (measured within 0.05 dB, see above)
SAFETY = 0.85            # use at most this fraction of the free memory
RESERVE = 256 * 2 ** 20  # and leave this much besides (decoder queue, encoder, Python objects)
SPYNET_CH = 120          # live channels per pixel of one SPyNet pair at its top pyramid level (see estimate)
MIN_TILE = 64            # smallest tile core in LR pixels the planner picks
# measured peak / estimate, per device type: on the CPU oneDNN's layout copies and the allocator roughly double the
# live-tensor figure (bench/bench_memory.py estimate: 385 MiB measured vs 195 MiB estimated at 160x96, window 8 +
# overlap 4); CUDA: not measured (no GPU lent), the back-off covers it
OVERHEAD = {"cpu": 2.0, "cuda": 1.0}


def parse_bytes(text) -> int:
    """'12G', '800M', '1.5GiB', '123456' -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    s = str(text).strip().upper().replace("IB", "").replace("B", "")
    mult = {"K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}
    try:
        if s and s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        return int(float(s))
    except ValueError:
        raise VsrInputError(f"cannot read memory size {text!r} (use e.g. 8G, 800M)") from None


def host_available() -> int:
    """MemAvailable from /proc/meminfo (bytes); elsewhere a large figure (no planning limit)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 1 << 50


def free_memory(device: torch.device, limit: Optional[int] = None) -> Tuple[int, int]:
    """Bytes a run may use: (on ``device``, on the host). Measured free memory times ``SAFETY`` minus
    ``RESERVE``; ``limit`` (or ``$VSR_ENGINE_MEMORY_LIMIT``), when given, caps both."""
    host = host_available()
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        dev = int(free) + int(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    else:
        dev = host
    dev, host = int(dev * SAFETY) - RESERVE, int(host * SAFETY) - RESERVE
    env = os.environ.get("VSR_ENGINE_MEMORY_LIMIT")
    if limit is None and env:
        limit = parse_bytes(env)
    if limit is not None:
        dev, host = min(dev, int(limit)), min(host, int(limit))
    return dev, host


# ---------------------------------------------------------------------------------------------------------------
# Estimate
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ModelInfo:
    """What the estimate needs to know about the model."""
    kind: str = "split"        # split (BasicVSR-like, run by window.SplitBidirectional) or blackbox
    num_feat: int = 64
    cleaner: bool = False      # RealBasicVSR: image cleaning over the whole window
    scale: float = 4.0
    known: bool = True         # False: an arbitrary black-box module, the estimate is a guess
    radius: int = 0            # sliding: frames each side of the output frame

    @staticmethod
    def of(proc, scale) -> "ModelInfo":
        core = getattr(proc, "core", None)
        sc = float(scale) if scale else 4.0
        if core is not None:
            return ModelInfo("split", int(getattr(core, "num_feat", 64)), getattr(proc, "cleaner", None) is not None,
                             sc, True)
        model = getattr(proc, "model", None)
        nf = getattr(model, "num_feat", None)
        if getattr(proc, "radius", None) is not None:     # window.SlidingWindow: one output frame at a time
            return ModelInfo("sliding", int(nf or 64), False, sc, nf is not None, int(proc.radius))
        return ModelInfo("blackbox", int(nf or 64), False, sc, nf is not None)


def _ceil32(v: int) -> int:
    return (v + 31) // 32 * 32


def estimate(h: int, w: int, window: int, overlap: int, info: ModelInfo, dtype_bytes: int = 4) -> int:
    """Peak bytes one window of ``window`` emitted + ``overlap`` lookahead frames of size ``h`` x ``w`` (LR) needs
    on the compute device, beyond the model weights. Terms (``n`` pixels, ``F`` features, ``L`` = window + overlap):
    the engine's frame buffer and the stacked window (2 x 3 L n); flows of the window kept (4 L n); the carried
    state saved for the back-off (F + 3 + 2 overlap) n; then the largest
    of: SPyNet on all L-1 pairs at once (about ``SPYNET_CH`` channels at the 32-padded size per pair), the backward
    branch (L features + the trunk's activations), SPyNet for the forward flows with the emitted features alive,
    and one frame's reconstruction with the emitted features alive (64 channels at 2x and 4x, twice, plus the
    output). RealBasicVSR adds its cleaning network over the whole window. Checked against the measured peak RSS
    in bench/bench_memory.py."""
    L = window + overlap
    n = h * w
    n32 = _ceil32(h) * _ceil32(w)
    F = info.num_feat
    s2 = info.scale ** 2
    fixed = 6 * L * n + 4 * L * n + (3 * L * n if info.cleaner else 0)   # RealBasicVSR: the cleaned copy
    up = 2 * 64 * s2 * n + 6 * 3 * s2 * n
    if info.kind == "sliding":
        # one output frame at a time: its 2R+1 frames of F features (concatenations and their BN/ReLU copies,
        # about 4 alive), the filter logits (25 s^2) and residual, the output
        k = 2 * info.radius + 1
        return int((fixed + 4 * k * F * n + 28 * s2 * n + up) * dtype_bytes)
    if info.kind == "split":
        fixed += (F + 3 + 2 * overlap) * n     # the state saved at each window start for the back-off
        phases = [
            (L - 1) * SPYNET_CH * n32,
            L * F * n + 4 * F * n,
            L * F * n + L * SPYNET_CH * n32,
            L * F * n + up,
        ]
        if info.cleaner:
            phases.append((3 * F + 6) * L * n)
    else:
        # whole-window forward: flows both ways, both branches' features and the L outputs
        phases = [(L - 1) * SPYNET_CH * n32 + 4 * L * n,
                  2 * L * F * n + L * 3 * s2 * n + up]
    return int((fixed + max(phases)) * dtype_bytes)


def host_estimate(h: int, w: int, window: int, overlap: int, scale: float, tiled: bool) -> int:
    """Host bytes besides the device estimate: decoded frames (uint8, queue + window) and, when tiled, the
    uint8 output canvas of one window plus one float output frame."""
    n = h * w
    b = (window + overlap + 16) * 3 * n
    if tiled:
        b += (window + overlap) * 3 * int(scale * scale * n) + 3 * 4 * int(scale * scale * n)
    return b


# ---------------------------------------------------------------------------------------------------------------
# Plan
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Plan:
    window: int
    grid: Tuple[int, int] = (1, 1)     # tiles (rows, cols)
    pad: int = 0                       # LR pixels of context around each tile
    need: int = 0                      # estimated device bytes
    free: int = 0                      # device bytes considered free

    @property
    def tiled(self) -> bool:
        return self.grid != (1, 1)

    def describe(self) -> str:
        t = f", tiles {self.grid[0]}x{self.grid[1]} (pad {self.pad})" if self.tiled else ""
        return f"window {self.window}{t}"


def tile_pad(scale: float) -> int:
    """LR pixels of context per tile side (tiling.DEFAULT_PAD), aligned so tile origins map to whole HR pixels."""
    from .tiling import DEFAULT_PAD, align_of
    q = align_of(scale)
    return int(math.ceil(DEFAULT_PAD / q) * q)


def _tile_shape(h: int, w: int, grid: Tuple[int, int], pad: int) -> Tuple[int, int]:
    ny, nx = grid
    th = math.ceil(h / ny) + (2 * pad if ny > 1 else 0)
    tw = math.ceil(w / nx) + (2 * pad if nx > 1 else 0)
    return min(th, h), min(tw, w)


def _grids(h: int, w: int):
    """Tile grids with growing count, splitting the longer side first, cores no smaller than MIN_TILE."""
    ny = nx = 1
    while True:
        if h / ny >= w / nx and h / (ny + 1) >= MIN_TILE:
            ny += 1
        elif w / (nx + 1) >= MIN_TILE:
            nx += 1
        elif h / (ny + 1) >= MIN_TILE:
            ny += 1
        else:
            return
        yield (ny, nx)


def _windows(window: int, min_window: int) -> List[int]:
    out, v = [], window
    while v > min_window:
        out.append(v)
        v = max(min_window, v // 2)
    out.append(min_window)
    return out


def plan(h: int, w: int, window: int, overlap: int, info: ModelInfo, dtype_bytes: int, free_dev: int,
         free_host: int, shared: bool, tile: Optional[int] = None, min_window: Optional[int] = None,
         overhead: float = 1.0) -> Plan:
    """Choose window and tiling for ``h`` x ``w`` LR frames. ``shared``: device memory is host memory (CPU).
    ``tile``: None = automatic, 0 = never tile, N = tiles of about N x N LR pixels."""
    mw = min(window, MIN_WINDOW if min_window is None else min_window)
    budget_dev, budget_host = free_dev, free_host
    pad = tile_pad(info.scale)

    def fits(grid, win):
        th, tw = _tile_shape(h, w, grid, pad) if grid != (1, 1) else (h, w)
        need = estimate(th, tw, win, overlap, info, dtype_bytes)
        if grid != (1, 1):   # the engine still buffers whole frames on the device
            need += (6 * (win + overlap)) * h * w * dtype_bytes
        need = int(need * overhead)
        host = host_estimate(h, w, win, overlap, info.scale, grid != (1, 1))
        if shared:
            return need + host <= budget_dev, need
        return need <= budget_dev and host <= budget_host, need

    if tile:
        grid = (max(1, math.ceil(h / tile)), max(1, math.ceil(w / tile)))
        for win in _windows(window, mw):
            ok, need = fits(grid, win)
            if ok:
                return Plan(win, grid, pad if grid != (1, 1) else 0, need, budget_dev)
        return Plan(mw, grid, pad if grid != (1, 1) else 0, fits(grid, mw)[1], budget_dev)
    for win in _windows(window, mw):
        ok, need = fits((1, 1), win)
        if ok:
            return Plan(win, (1, 1), 0, need, budget_dev)
    least = need
    if tile is None:
        for grid in _grids(h, w):
            for win in _windows(window, mw):
                ok, need = fits(grid, win)
                if ok:
                    return Plan(win, grid, pad, need, budget_dev)
                least = min(least, need)
    raise VsrInputError(
        f"{w}x{h} frames need at least {_size(least)} at window {mw} + overlap {overlap} even in the "
        f"smallest tiles, and only {_size(budget_dev)} can be used here; use a smaller input, "
        f"--dtype fp16 (on a GPU), or a smaller --window/--overlap (below {MIN_WINDOW} costs quality)")


def _size(b: int) -> str:
    b = max(0, b)
    return f"{b / 2 ** 30:.1f} GiB" if b >= 2 ** 30 else f"{b / 2 ** 20:.0f} MiB"


def next_plan(cur: Plan, h: int, w: int, min_window: int, scale: float) -> Optional[Plan]:
    """One back-off step: half the window (not below ``min_window``), then one more tile."""
    if cur.window > min_window:
        return dataclasses.replace(cur, window=max(min_window, cur.window // 2))
    for grid in _grids(h, w):
        if grid[0] * grid[1] > cur.grid[0] * cur.grid[1]:
            return Plan(cur.window, grid, tile_pad(scale))
    return None


def is_alloc_failure(e: BaseException) -> bool:
    """CUDA out-of-memory, MemoryError, or the CPU allocator's "can't allocate memory" RuntimeError."""
    if isinstance(e, MemoryError):
        return True
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(e, oom):
        return True
    if isinstance(e, RuntimeError):
        m = str(e).lower()
        return "out of memory" in m or "can't allocate memory" in m or "cannot allocate memory" in m
    return False


# ---------------------------------------------------------------------------------------------------------------
# Governor: the Engine's window processor with planning, tiling and back-off
# ---------------------------------------------------------------------------------------------------------------
class Governor:
    """Wraps a window processor (``window.SplitBidirectional`` / ``window.BlackBox``) with the same interface.

    ``plan_for(w, h)`` is called once the first frame's size is known and returns the window to buffer for.
    ``summary`` (a RunSummary, optional) gets ``plan``, ``tiles`` and ``backoffs`` filled in."""

    def __init__(self, proc, *, device, dtype, window: int, overlap: int, scale=None, tile: Optional[int] = None,
                 memory_limit: Optional[int] = None, enabled: bool = True, min_window: Optional[int] = None,
                 summary=None):
        self.base = proc
        self.proc = proc
        self.device = torch.device(device)
        self.dtype = dtype
        self.window = window
        self.overlap = overlap
        self.scale = scale
        self.tile = tile
        self.memory_limit = memory_limit
        self.enabled = enabled
        self.min_window = min(window, MIN_WINDOW if min_window is None else min_window)
        self.summary = summary
        self.current: Optional[Plan] = None
        self.size: Optional[Tuple[int, int]] = None
        self.backoffs: List[str] = []
        self._pending: Optional[dict] = None

    # -- processor interface -----------------------------------------------------------------------------------
    def reset(self):
        self.proc = self.base
        self.base.reset()
        self.current = None
        self._pending = None

    def state(self) -> Optional[dict]:
        return self.proc.state()

    def reset_state(self):
        """Forget the carried state (a scene cut: a new clip starts) and keep the plan (window, tiles)."""
        self.proc.reset()

    def load_state(self, st, device, dtype):
        self._pending = (st, device, dtype)
        if st is not None and "tile_grid" not in st:
            self.base.load_state(st, device, dtype)

    def left_context(self) -> int:
        return self.base.left_context()

    # -- planning ----------------------------------------------------------------------------------------------
    def plan_for(self, w: int, h: int) -> int:
        self.size = (h, w)
        info = ModelInfo.of(self.base, self.scale)
        if not self.enabled:
            self.current = Plan(self.window)
        else:
            free_dev, free_host = free_memory(self.device, self.memory_limit)
            self.current = plan(h, w, self.window, self.overlap, info, torch.tensor([], dtype=self.dtype)
                                .element_size(), free_dev, free_host, self.device.type != "cuda",
                                tile=0 if self.scale is None else self.tile,
                                min_window=self.min_window, overhead=OVERHEAD.get(self.device.type, 1.0))
        self._switch(self.current, self._pending[0] if self._pending else None)
        self._pending = None
        self._report()
        return self.current.window

    def _switch(self, p: Plan, st: Optional[dict]):
        """Make the processor for plan ``p`` and load state ``st`` (any layout) into it."""
        from . import tiling
        h, w = self.size
        if p.tiled and self.scale is None:
            raise VsrError("tiling needs a model with a known scale")
        if p.tiled:
            if not (isinstance(self.proc, tiling.TiledProcessor) and self.proc.grid == p.grid
                    and self.proc.pad == p.pad):
                self.proc = tiling.TiledProcessor(self.base, h, w, p.grid, p.pad, self.scale)
        else:
            self.proc = self.base
        if st is None:
            self.proc.reset()
        else:
            self.proc.load_state(tiling.convert_state(st, h, w, p.grid if p.tiled else None, p.pad,
                                                      float(self.scale or 1)),
                                 self.device, self.dtype)

    def _report(self):
        s = self.summary
        if s is None:
            return
        p = self.current
        s.window_used = p.window
        s.tiles = f"{p.grid[0]}x{p.grid[1]}" if p.tiled else ""
        s.backoffs = list(self.backoffs)

    # -- running -----------------------------------------------------------------------------------------------
    def process(self, x: torch.Tensor, s: int, n_emit: int, left: int = 0) -> Iterator[Tuple[int, torch.Tensor]]:
        if self.current is None:   # never planned (no size yet): plain pass-through
            yield from self.base.process(x, s, n_emit, left)
            return
        lo = s - left
        x_end = lo + x.shape[1]
        done = s                        # next frame to deliver
        cs = s                          # start of the current chunk
        while cs < s + n_emit:
            win = self.current.window
            rest = s + n_emit - cs
            whole_rest = s + n_emit == x_end and rest <= win + self.overlap
            cn = rest if (rest <= win or whole_rest) else win
            a = max(lo, cs - self.proc.left_context())
            b = x_end if cn == rest else min(x_end, cs + cn + self.overlap)
            snap = snapshot(self.proc.state())
            gen = self.proc.process(x[:, a - lo:b - lo], cs, cn, left=cs - a)
            try:
                for i, y in gen:
                    if i < done:
                        continue        # delivered before a back-off: recomputed for the state only
                    done = i + 1
                    yield i, y
            except BaseException as e:
                gen.close()
                del gen
                if not is_alloc_failure(e):
                    raise
                self._back_off(e, snap, cs)
                continue
            cs += cn

    def _back_off(self, e: BaseException, snap: Optional[dict], at: int):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        h, w = self.size
        nxt = next_plan(self.current, h, w, self.min_window, float(self.scale or 4))
        if nxt is None or (nxt.tiled and self.scale is None):
            raise VsrError(f"out of memory at frame {at} even with {self.current.describe()} "
                           f"({' '.join(str(e).split())[:100]}); use a smaller input or close other programs") from e
        self.backoffs.append(f"frame {at}: {self.current.describe()} -> {nxt.describe()}")
        self.current = nxt
        self._switch(nxt, snap)
        self._report()


def snapshot(st: Optional[dict]) -> Optional[dict]:
    """A copy of a processor state (tensors cloned on their device; no host sync)."""
    if st is None:
        return None
    return {k: v.clone() for k, v in st.items()}
