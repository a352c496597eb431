"""VapourSynth filter (optional extra): ``upscale(clip, model="basicvsr", ...)`` and the random-access frame server
under it (:class:`RandomAccessUpscaler`), which needs no VapourSynth.

VapourSynth asks for frames in any order, from several threads; the Engine streams a clip front to back. The frame
server gives output frame ``i`` exactly as ``Engine.run`` gives it for the same input frames (same window and
overlap, same scene cuts), whatever the order of requests:

* windows are the Engine's: in each scene (the whole clip without cuts) windows start every ``window`` frames from
  the scene start; a window takes ``overlap`` frames of lookahead, and the last window of a scene takes the rest
  whole when fewer than ``window + overlap`` frames are left (``window_bounds``); black-box models get ``overlap``
  frames of left context, sliding-window models (DUF, TDAN) their temporal radius;
* a window's output frames are computed on a miss (a lock per window, one computation at a time) and kept in an LRU
  cache of ``max_windows`` windows;
* recurrent models (BasicVSR, RealBasicVSR, DSCVSR: forward state carried from window to window) keep the carried
  state at window starts (``max_states`` of them, thinned so they stay spread over the clip); a window whose state
  is not kept is reached by stepping from the nearest kept state before it, or from the scene start.

Memory: at most ``max_windows`` windows of output frames (``window + overlap - 1`` frames each at most, float32 RGB
at the output size) plus ``max_states`` carried states (``num_feat`` x h x w feature + one frame + the lookahead
flows, at the input size), plus the input frames of the window being computed.

Scene cuts: ``cuts`` (frame indices that start a scene, or a callable ``i -> bool``) and/or the Engine's own
detector (``scene_cuts="on"``); the VapourSynth binding reads ``_SceneChangePrev`` / ``_SceneChangeNext``. Each cut
is a clip boundary, as in the Engine (docs/scene_cuts.md).

vspipe::

    # upscale.vpy
    import vapoursynth as vs
    from vsr_engine.vapoursynth import upscale
    clip = vs.core.bs.VideoSource("in.mkv")          # any source filter
    clip = upscale(clip, "realbasicvsr", window=16, output_format="input")
    clip.set_output()

    $ vspipe -c y4m upscale.vpy - | ffmpeg -i - -c:v libx264 -crf 18 out.mkv

See docs/vapoursynth.md.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Dict, Iterable, List, Optional, Tuple, Union

import numpy as np
import torch

from .io.common import VsrInputError

__all__ = ["RandomAccessUpscaler", "window_bounds", "upscale"]


def window_bounds(s: int, end: int, window: int, overlap: int) -> Tuple[int, int]:
    """The Engine's window starting at ``s`` in a scene (or clip) ending at ``end``: ``(e, la_end)``, frames
    ``[s, e)`` come out, frames ``[s, la_end)`` go in. The rest of the scene is taken whole when it is shorter than
    ``window + overlap``; else ``window`` frames with ``overlap`` frames of lookahead."""
    if end - s < window + overlap:
        return end, end
    return s + window, s + window + overlap


class RandomAccessUpscaler:
    """Output frame ``i`` of a clip on request (``get(i)``), in any order, from any thread, equal to ``Engine.run``.

    ``frames(i)``: input frame ``i`` as (H, W, 3) RGB (``layout="chw"``: (3, H, W)), uint8 (as the Engine reads
    it, /255) or float in [0, 1]. ``engine``: a :class:`~vsr_engine.engine.Engine` (not used by anything else while
    this serves), or ``None`` to build one from ``model`` and ``engine_kwargs``. ``cuts``: indices of frames that
    start a new scene, or a callable ``i -> bool``, or None. ``clamp``: outputs clamped to [0, 1] (as the Engine
    does before it quantizes). ``stats`` counts windows computed, cache hits and the most windows / states held."""

    def __init__(self, frames: Callable[[int], np.ndarray], num_frames: int, engine=None, *, model="basicvsr",
                 cuts: Union[None, Iterable[int], Callable[[int], bool]] = None, max_windows: int = 2,
                 max_states: int = 8, clamp: bool = True, layout: str = "hwc", **engine_kwargs):
        from . import memory
        from .engine import Engine
        if engine is None:
            engine = Engine(model, **engine_kwargs)
        elif engine_kwargs:
            raise VsrInputError(f"engine given: options {sorted(engine_kwargs)} belong to the Engine")
        self.n = int(num_frames)
        if self.n < 1:
            raise VsrInputError(f"a clip of {num_frames} frames: nothing to upscale")
        if max_windows < 1 or max_states < 1:
            raise VsrInputError(f"max_windows and max_states must be at least 1 (got {max_windows}, {max_states})")
        if layout not in ("hwc", "chw"):
            raise VsrInputError(f"layout must be 'hwc' or 'chw' (got {layout!r})")
        self.e, self.frames, self.layout, self.clamp = engine, frames, layout, clamp
        self.max_windows, self.max_states = int(max_windows), int(max_states)
        if cuts is None or callable(cuts):
            self._cut_fn = cuts
        else:
            cut_set = {int(c) for c in cuts}
            self._cut_fn = cut_set.__contains__
        self._detect = engine.scene_cuts is not None
        self._flags = bytearray(self.n)          # per frame: 0 unknown, 1 continues its scene, 2 starts a scene
        self.proc = memory.Governor(engine._proc, device=engine.device, dtype=engine.dtype, window=engine.window,
                                    overlap=engine.overlap, scale=engine.scale, tile=engine.tile,
                                    memory_limit=engine.memory_limit)
        self.proc.reset()
        first = self._input(0)
        self.height, self.width = int(first.shape[-2]), int(first.shape[-1])
        self.W = self.proc.plan_for(self.width, self.height)
        self.O = engine.overlap
        self.left = self.proc.left_context()
        self.stateful = engine.mode == "split"
        self._outs: "OrderedDict[int, Tuple[int, List[torch.Tensor]]]" = OrderedDict()   # window start -> (e, frames)
        self._states: "OrderedDict[int, dict]" = OrderedDict()   # window start -> carried state before it
        self._cache_lock = threading.Lock()
        self._compute_lock = threading.Lock()
        self._win_locks: Dict[int, threading.Lock] = {}
        self.stats = {"computed": 0, "hits": 0, "peak_windows": 0, "peak_states": 0}

    # -- input and scene cuts ----------------------------------------------------------------------------------
    def _input(self, j: int) -> torch.Tensor:
        """Frame ``j`` as (3, h, w) in the Engine's dtype on its device, converted as the Engine converts."""
        a = np.asarray(self.frames(j))
        if a.ndim != 3 or a.shape[0 if self.layout == "chw" else 2] != 3:
            raise VsrInputError(f"frame {j}: expected {'(3, H, W)' if self.layout == 'chw' else '(H, W, 3)'} "
                                f"RGB, got shape {a.shape}")
        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.layout == "hwc":
            t = t.permute(2, 0, 1)
        t = t.to(self.e.device)
        if t.dtype == torch.uint8:
            t = t.to(torch.float32).div_(255.0)
        elif t.is_floating_point():
            t = t.to(torch.float32)
        else:
            raise VsrInputError(f"frame {j}: uint8 or float RGB expected, got {a.dtype}")
        if hasattr(self, "height") and tuple(t.shape[-2:]) != (self.height, self.width):
            raise VsrInputError(f"frame {j}: size {t.shape[-1]}x{t.shape[-2]} differs from the first frame's "
                                f"{self.width}x{self.height}")
        return t.to(self.e.stage_dtype)

    def _starts_scene(self, i: int) -> bool:
        if i <= 0:
            return True
        f = self._flags[i]
        if f == 0:
            cut = bool(self._cut_fn(i)) if self._cut_fn is not None else False
            if not cut and self._detect:
                cut = self._detected(i)
            self._flags[i] = f = 2 if cut else 1
        return f == 2

    def _detected(self, i: int) -> bool:
        """The Engine's detector on frames i-1, i (scenecut.SceneCutDetector.push)."""
        from .scenecut import _distances, _stats
        with torch.inference_mode():
            hd, sd = _distances(_stats(self._input(i - 1)), _stats(self._input(i)))
        return bool(hd >= self.e.scene_cuts) and bool(sd >= self.e.scene_sad)

    def _scene_start(self, i: int) -> int:
        if self._cut_fn is None and not self._detect:
            return 0
        while i > 0 and not self._starts_scene(i):
            i -= 1
        return i

    def _bounds(self, s: int) -> Tuple[int, int]:
        """(e, la_end) of the window starting at ``s`` (a window start of its scene)."""
        limit = min(self.n, s + self.W + self.O)
        end = next((c for c in range(s + 1, limit) if self._starts_scene(c)), limit)
        if end == limit and limit < self.n:      # neither a cut nor the clip end within window + overlap
            end = self.n
        return window_bounds(s, end, self.W, self.O)

    def window_of(self, i: int) -> Tuple[int, int]:
        """(scene start, window start) of the window that outputs frame ``i``."""
        z = self._scene_start(i)
        s = z + (i - z) // self.W * self.W
        if s > z and self._bounds(s - self.W)[0] > i:   # the scene's last window took the rest whole
            s -= self.W
        return z, s

    # -- computing windows -------------------------------------------------------------------------------------
    def _compute(self, z: int, s: int) -> Tuple[int, List[torch.Tensor]]:
        """Step window ``s`` of the scene starting at ``z`` through the Engine's window step (state as loaded)."""
        e, la = self._bounds(s)
        lo = max(s - self.left, z) if self.left else s
        outs = []
        with torch.inference_mode():
            x = torch.stack([self._input(j) for j in range(lo, la)]).unsqueeze(0)
            for _, y in self.e._step_window(self.proc, x, s - z, e - s, s - lo):
                y = y.detach().float()
                outs.append((y.clamp(0, 1) if self.clamp else y).cpu().contiguous())
        self.stats["computed"] += 1
        return e, outs

    def _put_state(self, s: int, st: dict) -> None:
        self._states[s] = st
        self._states.move_to_end(s)
        while len(self._states) > self.max_states:
            # thin out: drop the state closest to the one before it (the newest is kept), so the kept states
            # stay spread over the clip and a backward seek restarts near where it lands
            keys = sorted(self._states)
            newest = next(reversed(self._states))
            gaps = [(k - p, k) for p, k in zip(keys, keys[1:]) if k != newest]
            if gaps:
                del self._states[min(gaps)[1]]
            else:
                self._states.popitem(last=False)
        self.stats["peak_states"] = max(self.stats["peak_states"], len(self._states))

    def _run_to(self, z: int, s: int) -> Tuple[int, List[torch.Tensor]]:
        """Window ``s``'s outputs; recurrent models step from the nearest kept state (or the scene start)."""
        from .memory import snapshot
        if not self.stateful:
            self.proc.reset_state()
            return self._compute(z, s)
        t = s
        while t > z and t not in self._states:
            t -= self.W
        if t == z:
            self.proc.reset_state()
        else:
            self._states.move_to_end(t)
            self.proc.proc.load_state(snapshot(self._states[t]), self.e.device, self.e.stage_dtype)
        while True:
            e, outs = self._compute(z, t)
            if e < self.n and not self._starts_scene(e):
                self._put_state(e, snapshot(self.proc.proc.state()))
            if t == s:
                return e, outs
            self._store(t, e, outs)          # a window stepped on the way: kept like any other
            t = e

    def _store(self, s: int, e: int, outs: List[torch.Tensor]) -> None:
        with self._cache_lock:
            self._outs[s] = (e, outs)
            self._outs.move_to_end(s)
            while len(self._outs) > self.max_windows:
                self._outs.popitem(last=False)
            self.stats["peak_windows"] = max(self.stats["peak_windows"], len(self._outs))

    def _lookup(self, s: int):
        with self._cache_lock:
            hit = self._outs.get(s)
            if hit is not None:
                self._outs.move_to_end(s)
                self.stats["hits"] += 1
            return hit

    def _lock_for(self, s: int) -> threading.Lock:
        with self._cache_lock:
            return self._win_locks.setdefault(s, threading.Lock())

    def get_planes(self, i: int) -> np.ndarray:
        """Output frame ``i`` as (3, H, W) float32 (read-only: it is the cache's copy)."""
        if not 0 <= i < self.n:
            raise IndexError(f"frame {i} is outside the clip (0 .. {self.n - 1})")
        z, s = self.window_of(i)
        hit = self._lookup(s)
        if hit is None:
            with self._lock_for(s):
                hit = self._lookup(s)
                if hit is None:
                    with self._compute_lock:
                        hit = self._lookup(s)     # computed meanwhile on the way to a later window
                        if hit is None:
                            hit = self._run_to(z, s)
                            self._store(s, *hit)
        a = hit[1][i - s].numpy()
        a.flags.writeable = False
        return a

    def get(self, i: int) -> np.ndarray:
        """Output frame ``i`` as (H, W, 3) float32 RGB (a read-only view)."""
        return self.get_planes(i).transpose(1, 2, 0)

    def output_size(self) -> Tuple[int, int]:
        """(W, H) of the output frames."""
        if self.e.scale:
            return self.e.output_size(self.width, self.height)
        h, w = self.get_planes(0).shape[1:]
        return w, h


# ---------------------------------------------------------------------------------------------------------------
# the VapourSynth binding
# ---------------------------------------------------------------------------------------------------------------
_MATRIX = {1: "709", 5: "470bg", 6: "170m", 7: "240m", 9: "2020ncl", 10: "2020cl"}


def _vs():
    try:
        import vapoursynth
    except ImportError:
        raise VsrInputError("vsr_engine.vapoursynth.upscale needs VapourSynth (pip install vapoursynth; "
                            "Python >= 3.12 for its wheels)") from None
    return vapoursynth


def upscale(clip, model="basicvsr", *, weights=None, variant=None, device=None, dtype=None,
            window: Optional[int] = None, overlap: Optional[int] = None, scene_cuts=None, scene_props: bool = True,
            output_format=None, matrix_in_s: Optional[str] = None, max_windows: int = 2, max_states: int = 8,
            clamp: bool = True, **engine_kwargs):
    """Upscale a VapourSynth ``clip`` with ``model`` (a registered name or an ``nn.Module``), frame props kept.

    Input: RGBS / RGBH as they are; integer RGB, YUV and GRAY go through ``core.resize`` to RGBS (YUV with
    ``matrix_in_s``, default: frame 0's ``_Matrix``, else "709"). Output: RGBS (RGBH for RGBH input), or
    ``output_format`` ("input": the input's format; or a VapourSynth format) by ``core.resize.Bicubic``.
    ``scene_props``: ``_SceneChangePrev`` / ``_SceneChangeNext`` are clip boundaries; ``scene_cuts``: the Engine's
    own detector as well ("on" or a threshold). ``window``, ``overlap``, ``device``, ``dtype`` and other keyword
    arguments go to the :class:`~vsr_engine.engine.Engine`; ``max_windows`` / ``max_states``: see
    :class:`RandomAccessUpscaler`."""
    vs = _vs()
    from .engine import DEFAULT_OVERLAP, DEFAULT_WINDOW, Engine
    core = vs.core
    fmt = clip.format
    if fmt is None or clip.width == 0 or clip.height == 0:
        raise VsrInputError("upscale: clips of variable format or size are not supported")
    matrix = matrix_in_s
    if fmt.color_family == vs.YUV and matrix is None:
        matrix = _MATRIX.get(int(clip.get_frame(0).props.get("_Matrix", 2)), "709")
    if fmt.color_family == vs.RGB and fmt.sample_type == vs.FLOAT and fmt.bits_per_sample in (16, 32):
        rgb = clip
    elif fmt.color_family == vs.YUV:
        rgb = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s=matrix)
    else:
        rgb = core.resize.Point(clip, format=vs.RGBS)
    out_fmt = vs.RGBH if rgb.format.bits_per_sample == 16 else vs.RGBS
    engine = Engine(model, weights=weights, variant=variant, device=device, dtype=dtype,
                    window=DEFAULT_WINDOW if window is None else window,
                    overlap=DEFAULT_OVERLAP if overlap is None else overlap, scene_cuts=scene_cuts, **engine_kwargs)

    def read(j: int) -> np.ndarray:
        f = rgb.get_frame(j)
        return np.stack([np.asarray(f[p]) for p in range(3)])

    def starts_scene(i: int) -> bool:
        return bool(rgb.get_frame(i).props.get("_SceneChangePrev", 0)) or \
            bool(rgb.get_frame(i - 1).props.get("_SceneChangeNext", 0))

    server = RandomAccessUpscaler(read, rgb.num_frames, engine, cuts=starts_scene if scene_props else None,
                                  max_windows=max_windows, max_states=max_states, clamp=clamp, layout="chw")
    ow, oh = server.output_size()
    blank = core.std.BlankClip(rgb, width=ow, height=oh, format=out_fmt, keep=True)

    def fill(n, f):
        y = server.get_planes(n)
        if y.shape[1:] != (oh, ow):
            raise VsrInputError(f"frame {n}: the model gave {y.shape[2]}x{y.shape[1]}, expected {ow}x{oh}")
        out = f[0].copy()
        for p in range(3):
            np.asarray(out[p])[...] = y[p]
        for k, v in f[1].props.items():
            out.props[k] = v
        return out

    out = core.std.ModifyFrame(blank, [blank, rgb], fill)
    if output_format is None:
        return out
    target = fmt if output_format == "input" else core.get_video_format(output_format)
    if target.id == out.format.id:
        return out
    if target.color_family == vs.YUV:
        return core.resize.Bicubic(out, format=target.id, matrix_s=matrix or "709")
    return core.resize.Bicubic(out, format=target.id)
