"""Join verified segments into the output by stream copy (no re-encode), with the source's audio and subtitle
streams muxed once; check the frame count and that the timestamps are exactly the source's; rename into place.

Segments are encoded independently, each with its own decoder delay, so their decode timestamps (DTS) cannot be
copied as they are. The merged stream gets one global DTS sequence: packet ``k`` (decode order) gets the
``(k - D)``-th smallest PTS, with ``D`` the smallest delay that keeps every DTS at or before its PTS. PTS are the
source's, untouched.
"""
from __future__ import annotations

import os
import time
from fractions import Fraction
from typing import List, Optional

from ..video import VsrOutputError
from ..io.encode import remux
from ..io.resume import publish_file

__all__ = ["merge_segments", "MergeError"]

class MergeError(VsrOutputError):
    pass


def _global_dts(pts_decode_order: List[int], first_dur: int) -> List[int]:
    srt = sorted(pts_decode_order)
    rank = {p: i for i, p in enumerate(srt)}
    delay = max(0, max(k - rank[p] for k, p in enumerate(pts_decode_order)))
    return [srt[k - delay] if k >= delay else srt[0] - (delay - k) * first_dur
            for k in range(len(pts_decode_order))]


def merge_segments(seg_files: List[str], seg_packets: List[List[list]], time_base: Fraction, source: Optional[str],
                   output: str, fmt: str, expected_pts: List[int], *, rotation: int = 0, work_dir: str,
                   faststart: bool = True, fps=None, sar=None) -> dict:
    """Write ``output`` from ``seg_files`` (each with its recorded ``[pts, dts, duration, key]`` packets) by the
    single-process final step (:func:`vsr_engine.io.encode.remux`): the source's audio/subtitle packets are
    copied once, each exactly once, as ``vsr-engine upscale`` copies them."""
    import av
    t0 = time.perf_counter()
    tb = Fraction(time_base)
    order = [rec[0] for recs in seg_packets for rec in recs]
    if len(order) != len(expected_pts):
        raise MergeError(f"{output}: segments hold {len(order)} frames, the source has {len(expected_pts)}")
    first_dur = next((rec[2] for recs in seg_packets for rec in recs if rec[2]), 1)
    dts = _global_dts(order, first_dur)
    ext = os.path.splitext(output)[1]
    tmp = os.path.join(work_dir, "merged" + ext + ".tmp")
    with av.open(seg_files[0]) as first:
        extradata = first.streams.video[0].codec_context.extradata

    def video():
        k = 0
        for path, recs in zip(seg_files, seg_packets):
            with av.open(path) as c:
                vs = c.streams.video[0]
                if vs.codec_context.extradata != extradata:
                    raise MergeError(f"{os.path.basename(path)} was encoded with other parameters than the first "
                                     "segment; it cannot be joined by stream copy")
                j = 0
                for p in c.demux(vs):
                    if p.size == 0:
                        continue
                    if j >= len(recs):
                        raise MergeError(f"{path}: more packets than recorded")
                    pts, _, dur, _ = recs[j]
                    p.time_base = tb
                    p.pts, p.dts = pts, dts[k]
                    if dur:
                        p.duration = dur
                    j += 1
                    k += 1
                    yield p
                if j != len(recs):
                    raise MergeError(f"{path}: {j} of {len(recs)} recorded packets")

    copy = remux(tmp, fmt, seg_files[0], video(), time_base=tb, fps=fps, sar=sar, rotation=rotation,
                 audio_from=source, faststart=faststart)
    t_mux = time.perf_counter() - t0
    try:
        if copy.warning:
            raise MergeError(f"{output}: {copy.warning}; `vsr-engine upscale` writes what it can of such an input")
        _verify(tmp, tb, expected_pts, copy.written)
    except BaseException:
        os.remove(tmp)
        raise
    publish_file(tmp, output)
    return {"frames": len(expected_pts), "copied_packets": copy.written, "mux_seconds": t_mux,
            "seconds": time.perf_counter() - t0, "copy_counts": copy.counts}


def _verify(path: str, tb: Fraction, expected_pts: List[int], n_copied: int) -> None:
    """Frame count and PTS continuity of the written file: its video PTS are exactly the source's (up to one
    constant shift a container may apply), every other stream has all its packets."""
    import av
    got = []
    others = 0
    with av.open(path) as c:
        vs = c.streams.video[0]
        vtb = Fraction(vs.time_base)
        for p in c.demux():
            if p.stream.index == vs.index:
                if p.size:
                    got.append(Fraction(p.pts) * vtb)
            elif p.size or p.pts is not None or p.dts is not None:   # an empty copied packet counts too
                others += 1
    name = os.path.basename(path)
    if len(got) != len(expected_pts):
        raise MergeError(f"merged {name}: {len(got)} frames, expected {len(expected_pts)}")
    got.sort()
    want = [Fraction(p) * tb for p in expected_pts]
    shift = got[0] - want[0]
    bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a - b != shift), None)
    if bad is not None:
        raise MergeError(f"merged {name}: frame {bad} at {float(got[bad]):.6f} s, expected {float(want[bad] + shift):.6f} s")
    if others != n_copied:
        raise MergeError(f"merged {name}: {others} audio/subtitle packets, {n_copied} copied")
