"""One segment, start to finish: seek, decode, run the Engine, keep exactly [start, end), encode, verify.

``SegmentWorker`` holds one Engine (the model is loaded once) and serves many segments; ``job.py`` runs it as a
Ray actor (one GPU each where GPUs exist). Nothing here imports Ray, so the same code runs in tests and benches
without it.

The encoded segment is written to a temporary file, closed, re-opened and checked (frame count, first and last
PTS) and only then handed back (its bytes, with the exact timing of every packet); the driver writes it into the
job folder under its final name by an atomic rename. A segment run twice gives the same file, so retries are
harmless (at-least-once execution, exactly-once frames).
"""
from __future__ import annotations

import hashlib
import importlib
import os
import tempfile
import time
from fractions import Fraction
from typing import Iterator, List, Optional

import numpy as np

from ..video import frame_to_rgb, rgb_to_frame
from .index import FrameIndex
from .plan import Segment

__all__ = ["SegmentError", "build_engine", "decode_range", "upscale_range", "encode_frames", "verify_segment",
           "SegmentWorker", "encoder_options"]

# output colour tags for a matrix (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic)
_TAGS_FOR = {"bt709": (1, 1, 1), "bt601": (6, 6, 6), "bt2020": (9, 9, 14), "fcc": (4, 2, 2), "smpte240m": (7, 7, 7)}
_CRF_CODECS = ("libx264", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1")
_PRESET_CODECS = ("libx264", "libx265", "libsvtav1")


class SegmentError(Exception):
    """A segment could not be produced (the message says which and why)."""


def build_engine(spec: dict):
    """An Engine from a picklable spec: ``factory`` ("module:function" returning an Engine or a module) or the
    Engine's own arguments (``model``, ``weights``, ``variant``, ``window``, ``overlap``, ``dtype``, ``device``,
    ``mode``, ``model_kwargs``). ``seed`` makes random-init weights (``weights=False``) equal on every worker."""
    import torch
    from ..engine import Engine
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    if spec.get("seed") is not None:
        torch.manual_seed(int(spec["seed"]))
    kw = dict(window=spec.get("window", 32), overlap=spec.get("overlap", 8), device=spec.get("device"),
              dtype=spec.get("dtype"), mode=spec.get("mode", "auto"))
    if spec.get("scene_cuts") is not None:
        kw["scene_cuts"] = spec["scene_cuts"]
    if spec.get("factory"):
        mod, _, fn = spec["factory"].partition(":")
        obj = getattr(importlib.import_module(mod), fn)(**spec.get("model_kwargs", {}))
        return obj if isinstance(obj, Engine) else Engine(obj, **kw)
    return Engine(spec.get("model", "basicvsr"), weights=spec.get("weights"), variant=spec.get("variant"), **kw,
                  **spec.get("model_kwargs", {}))


def decode_range(path: str, index: FrameIndex, a: int, b: int, matrix: Optional[str],
                 color_range: Optional[str]) -> Iterator[np.ndarray]:
    """RGB frames ``[a, b)`` of ``path`` (presentation order), decoded from the last keyframe at or before ``a``.
    Frames are identified by their PTS in ``index``; anything else is an error, never a silent shift."""
    import av
    want = index.pts[a:b]
    if not want:
        return
    key = index.keyframe_at_or_before(a)
    while True:
        c = av.open(path)
        try:
            vs = next((s for s in c.streams if s.index == index.stream_index), None)
            if vs is None or vs.type != "video":
                raise SegmentError(f"{path}: stream #{index.stream_index} is not the indexed video stream")
            vs.thread_type = "AUTO"
            if key > 0:
                c.seek(index.pts[key], stream=vs, backward=True, any_frame=False)
            k = 0
            started = False
            too_far = False
            for f in c.decode(vs):
                if f.pts is None:
                    raise SegmentError(f"{path}: decoded a frame without a timestamp")
                if f.pts < want[0]:
                    continue
                if not started and f.pts > want[0]:
                    too_far = True   # the seek landed after our first frame: start from an earlier keyframe
                    break
                started = True
                if f.pts != want[k]:
                    raise SegmentError(f"{path}: frame {a + k} decoded with PTS {f.pts}, the index says {want[k]}")
                yield frame_to_rgb(f, matrix, color_range)
                k += 1
                if k == len(want):
                    return
            if not too_far:
                raise SegmentError(f"{path}: decoding stopped after {k} of {len(want)} frames of [{a}, {b})")
        finally:
            c.close()
        if key == 0:
            raise SegmentError(f"{path}: frame {a} (PTS {want[0]}) cannot be decoded")
        key = index.keyframe_at_or_before(key - 1) if key > 0 else 0


def upscale_range(engine, frames, lead: int, count: int) -> Iterator[np.ndarray]:
    """Run ``engine`` on ``frames`` (context included) and yield only outputs ``lead .. lead+count-1``."""
    k = -1
    gen = engine.run(frames)
    try:
        for k, y in enumerate(gen):
            if k >= lead:
                yield y
            if k + 1 >= lead + count:
                return
    finally:
        gen.close()
    if k + 1 < lead + count:
        raise SegmentError(f"the engine gave {k + 1} frames for {lead + count} inputs")


def encoder_options(enc: dict) -> dict:
    codec = enc.get("codec", "libx264")
    opts = {}
    if enc.get("crf") is not None and codec in _CRF_CODECS:
        opts["crf"] = str(enc["crf"])
        if codec in ("libvpx", "libvpx-vp9"):
            opts["b"] = "0"
    if enc.get("preset") and codec in _PRESET_CODECS:
        opts["preset"] = str(enc["preset"])
    if codec in ("libx264", "libx265"):
        opts["flags"] = "+cgop"          # closed GOPs: a segment never refers to frames outside itself
    opts.update({k: str(v) for k, v in (enc.get("options") or {}).items()})
    return opts


def _output_colour(src: dict, pix_fmt: str):
    """(matrix, range, tags) of the output, as the single-process video sink chooses them."""
    matrix = src.get("matrix") or "bt709"
    rng = src.get("color_range") if (src.get("matrix") and src.get("color_range")) else "limited"
    if pix_fmt.startswith(("rgb", "bgr", "gbr")):
        rng = "full"
    spc, prim, trc = _TAGS_FOR.get(matrix, (1, 1, 1))
    tags = dict(src.get("tags") or {})
    guessed = bool(src.get("matrix")) and bool(src.get("matrix_guessed"))
    out = {"colorspace": tags["colorspace"] if tags.get("colorspace", 2) not in (2, None) else spc,
           "color_range": 1 if rng == "limited" else 2,
           "color_primaries": tags["color_primaries"] if tags.get("color_primaries", 2) not in (2, None)
           else (2 if guessed else prim),
           "color_trc": tags["color_trc"] if tags.get("color_trc", 2) not in (2, None) else (2 if guessed else trc)}
    return matrix, rng, out


def encode_frames(frames, pts: List[int], durations: List[int], time_base: Fraction, path: str, *,
                  size, enc: dict, src: dict, seg_format: str) -> List[list]:
    """Encode RGB ``frames`` (one per ``pts``) into ``path``; returns ``[pts, dts, duration, key]`` of every
    packet in file order (the exact timing, whatever the container rounds)."""
    import av
    codec, pix_fmt = enc.get("codec", "libx264"), enc.get("pix_fmt", "yuv420p")
    matrix, rng, tags = _output_colour(src, pix_fmt)
    tb = Fraction(time_base)
    packets: List[list] = []
    c = av.open(path, "w", format=seg_format)
    try:
        rate = Fraction(src["fps"]) if src.get("fps") else None
        s = c.add_stream(codec, rate=rate) if rate else c.add_stream(codec)
        s.width, s.height = size
        s.pix_fmt = pix_fmt
        s.time_base = tb
        cc = s.codec_context
        cc.time_base = tb
        if rate:
            cc.framerate = rate
        for k, v in tags.items():
            try:
                setattr(cc, k, v)
            except Exception:  # pragma: no cover
                pass
        cc.options = encoder_options(enc)
        if src.get("rotation"):
            try:
                s.set_display_rotation(src["rotation"])
            except Exception:  # pragma: no cover
                pass
        n = 0
        for rgb, p, d in zip(frames, pts, durations):
            f = rgb_to_frame(rgb, pix_fmt, matrix, rng)
            f.pts, f.time_base = int(p), tb
            try:
                f.duration = int(d)
            except Exception:  # pragma: no cover
                pass
            for pk in s.encode(f):
                packets.append([pk.pts, pk.dts, int(d), bool(pk.is_keyframe)])
                c.mux(pk)
            n += 1
        for pk in s.encode(None):
            packets.append([pk.pts, pk.dts, None, bool(pk.is_keyframe)])
            c.mux(pk)
    finally:
        c.close()
    if n != len(pts):
        raise SegmentError(f"encoded {n} frames, expected {len(pts)}")
    dur = dict(zip(pts, durations))
    for rec in packets:       # packets come out reordered: give each its own frame's duration
        rec[2] = int(dur.get(rec[0], rec[2] or 0))
    return packets


def verify_segment(path: str, packets: List[list], pts: List[int]) -> None:
    """The file decodes to exactly ``len(pts)`` frames, its packets are the recorded ones, and the recorded
    presentation times are exactly ``pts`` (so the first and last PTS are the source's)."""
    import av
    with av.open(path) as c:
        vs = c.streams.video[0]
        n_pk = 0
        n_fr = 0
        for p in c.demux(vs):
            if p.size:
                n_pk += 1
            for _ in p.decode():
                n_fr += 1
    if n_pk != len(packets):
        raise SegmentError(f"{os.path.basename(path)}: {n_pk} packets in the file, {len(packets)} recorded")
    if n_fr != len(pts):
        raise SegmentError(f"{os.path.basename(path)}: decodes to {n_fr} frames, expected {len(pts)}")
    got = sorted(p[0] for p in packets)
    if got != list(pts):
        raise SegmentError(f"{os.path.basename(path)}: PTS {got[:1]}..{got[-1:]} differ from the source's "
                           f"{pts[:1]}..{pts[-1:]}")
    if not packets[0][3]:
        raise SegmentError(f"{os.path.basename(path)}: does not start with a keyframe")


class SegmentWorker:
    """Loads a model once and runs segments; ``spec`` (for :func:`build_engine`) is the model it starts with.

    A task may name another spec (a later job on a kept pool): engines are cached by spec, the last two kept.
    ``faults`` in a task (tests only): ``{"raise": {seg_id: n}}`` raises in the first ``n`` attempts of a
    segment; ``{"sleep": s}`` sleeps ``s`` seconds per output frame (so a test can act mid-segment);
    ``{"hang": {seg_id: n}}`` sleeps forever after the first output frame in the first ``n`` attempts.

    :meth:`progress` is the heartbeat: the driver calls it (the actor serves two calls at once) while
    :meth:`run` works, and a segment whose frame counter stops moving for too long is declared hung."""

    def __init__(self, spec: Optional[dict] = None):
        self._engines: "dict" = {}
        self._progress = {"segment": None, "attempt": 0, "frames": 0, "t": time.time()}
        if spec is not None:
            self._engine(spec)

    def _engine(self, spec: dict):
        import json
        key = json.dumps(spec, sort_keys=True, default=str)
        if key not in self._engines:
            while len(self._engines) >= 2:
                self._engines.pop(next(iter(self._engines)))
            self._engines[key] = build_engine(dict(spec))
        return self._engines[key]

    def progress(self) -> dict:
        """Heartbeat: the segment being run, frames decoded + encoded so far, and when the count last moved."""
        return dict(self._progress, now=time.time())

    def _tick(self, it):
        p = self._progress
        for x in it:
            p["frames"] += 1
            p["t"] = time.time()
            yield x

    def ready(self) -> dict:
        import socket
        return {"pid": os.getpid(), "host": socket.gethostname(), "node": _node_id()}

    def run(self, task: dict) -> dict:
        """``task``: spec, path, index (dict), segment (dict), src (colour/timing of the source), enc, seg_format,
        attempt, faults. Returns the verified segment: bytes, packets, frames, first/last PTS, sha256, seconds."""
        t0 = time.perf_counter()
        seg = Segment(**task["segment"])
        idx = task["index"] if isinstance(task["index"], FrameIndex) else FrameIndex.from_dict(task["index"])
        faults = task.get("faults") or {}
        n_raise = (faults.get("raise") or {}).get(seg.id, 0)
        if task.get("attempt", 1) <= n_raise:
            raise SegmentError(f"injected fault in segment {seg.id} (attempt {task.get('attempt', 1)})")
        sleep = float(faults.get("sleep", 0))
        hang = task.get("attempt", 1) <= (faults.get("hang") or {}).get(seg.id, 0)
        self._progress = {"segment": seg.id, "attempt": task.get("attempt", 1), "frames": 0, "t": time.time()}
        engine = self._engine(task["spec"])
        src = task["src"]
        frames = self._tick(decode_range(task["path"], idx, seg.ctx_start, seg.ctx_end, src.get("matrix"),
                                         src.get("color_range")))
        outs = upscale_range(engine, frames, seg.start - seg.ctx_start, seg.frames)
        if sleep:
            outs = _slowly(outs, sleep)
        if hang:
            outs = _hang_after_first(outs)
        outs = self._tick(outs)
        pts = idx.pts[seg.start:seg.end]
        dur = idx.duration[seg.start:seg.end]
        w, h = engine.output_size(src["width"], src["height"])
        ext = ".mp4" if task["seg_format"] == "mp4" else ".mkv"
        fd, tmp = tempfile.mkstemp(prefix=f"vsr_{seg.name}_", suffix=ext + ".tmp")
        os.close(fd)
        try:
            packets = encode_frames(outs, pts, dur, idx.time_base, tmp, size=(w, h), enc=task["enc"], src=src,
                                    seg_format=task["seg_format"])
            verify_segment(tmp, packets, pts)
            with open(tmp, "rb") as fh:
                data = fh.read()
        finally:
            try:
                os.remove(tmp)
            except OSError:
                pass
        return {"segment": seg.id, "frames": seg.frames, "first_pts": pts[0], "last_pts": pts[-1],
                "packets": packets, "data": data, "sha256": hashlib.sha256(data).hexdigest(),
                "seconds": time.perf_counter() - t0, "pid": os.getpid(), "width": w, "height": h}


def _hang_after_first(it):
    """Tests: one frame, then sleep forever (a hung worker: alive, answering nothing, making no progress)."""
    for x in it:
        yield x
        while True:
            time.sleep(3600)


def _slowly(it, s):
    for x in it:
        time.sleep(s)
        yield x


def _node_id() -> Optional[str]:
    try:
        import ray
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None
