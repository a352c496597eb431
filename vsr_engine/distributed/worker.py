"""One segment, start to finish: seek, decode, run the Engine, keep exactly [start, end), encode, verify.

Decoding and encoding are the single-process stages of ``vsr_engine.io``: the decoder reads the segment's frames
with their context as a :class:`~vsr_engine.io.common.FrameRange` (seek to a keyframe, frames identified by PTS),
and :class:`~vsr_engine.io.encode.SegmentSink` encodes the segment's own frames exactly as ``vsr-engine upscale``
does (colour tags, SAR, rotation, bit depth, HDR10, timing).

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

from ..io.common import FrameRange
from ..io.decode import VideoReader
from ..io.encode import SegmentSink
from ..io.stage import open_staged_source
from .index import FrameIndex
from .plan import Segment

__all__ = ["SegmentError", "build_engine", "frame_range", "decode_range", "upscale_range", "encode_segment",
           "verify_segment", "SegmentWorker"]


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


def frame_range(index: FrameIndex, a: int, b: int) -> FrameRange:
    """Frames ``[a, b)`` of the indexed video as the decoder option: their PTS, and the keyframes at or before
    ``a`` to seek to, nearest first (the start of the file last)."""
    seek: List[Optional[int]] = []
    k = index.keyframe_at_or_before(a)
    while k > 0:
        seek.append(index.pts[k])
        k = index.keyframe_at_or_before(k - 1)
    return FrameRange(index.pts[a:b], seek + [None])


def decode_range(path: str, index: FrameIndex, a: int, b: int) -> Iterator[np.ndarray]:
    """RGB frames ``[a, b)`` of ``path`` (presentation order), read by the single-process decoder
    (:class:`~vsr_engine.io.decode.VideoReader` with a :class:`FrameRange`)."""
    with VideoReader(path, frame_range=frame_range(index, a, b)) as r:
        for rgb, _ in r:
            yield rgb


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


def encode_segment(engine, path: str, index: FrameIndex, seg: Segment, enc: dict, seg_format: str, out: str,
                   on_frame=None):
    """Run ``engine`` on frames ``[seg.ctx_start, seg.ctx_end)`` of ``path`` and encode ``[seg.start, seg.end)``
    into ``out`` -- the single-process decoder and encoder (:class:`SegmentSink`). Returns (packets, (w, h))."""
    src = open_staged_source(path, frame_range=frame_range(index, seg.ctx_start, seg.ctx_end))
    sink = SegmentSink(out, index.pts[seg.start:seg.end], format=seg_format, codec=enc.get("codec", "libx264"),
                       crf=enc.get("crf"), preset=enc.get("preset"), pix_fmt=enc.get("pix_fmt"),
                       options=enc.get("options"))
    try:
        summary = engine.run(src, sink, progress=on_frame)
    finally:
        src.close()
    if not summary.complete:      # a frame lost in decoding or encoding: never a short segment
        raise SegmentError(f"segment {seg.id} of {path}: " + "; ".join(summary.warnings))
    return sink.packets, summary.output_size


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

    def _on_frame(self, sleep: float = 0.0, hang: bool = False):
        """Called by the Engine after every output frame: the heartbeat; the test faults (sleep, hang) too."""
        p = self._progress

        def tick(done, total, seconds):
            p["frames"] += 1
            p["t"] = time.time()
            if sleep:
                time.sleep(sleep)
            if hang:
                while True:         # a hung worker: alive, answering nothing, making no progress
                    time.sleep(3600)
        return tick

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
        pts = idx.pts[seg.start:seg.end]
        ext = ".mp4" if task["seg_format"] == "mp4" else ".mkv"
        fd, tmp = tempfile.mkstemp(prefix=f"vsr_{seg.name}_", suffix=ext + ".tmp")
        os.close(fd)
        try:
            packets, (w, h) = encode_segment(engine, task["path"], idx, seg, task["enc"], task["seg_format"], tmp,
                                             on_frame=self._on_frame(sleep, hang))
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


def _node_id() -> Optional[str]:
    try:
        import ray
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None
