"""Batch (``vsr-engine batch``) against single-process (``vsr-engine upscale``) outputs of corpus files: the
representative subset (SAR, HDR10 10-bit, VFR, rotation, two audio + two subtitle streams, edit list), and what
is compared: frames, PTS, declared rate, colour tags, bit depth, SAR, rotation, HDR10 side data, streams, and
every audio/subtitle packet (bytes and time)."""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Dict, List

import make_corpus as M
import check_corpus as C

# corpus file -> output extension (what the corpus test writes it to)
SUBSET = {
    "anamorphic_sar43.mkv": ".mkv",        # SAR 4:3 (H.264)
    "hevc_hdr10_pq.mkv": ".mkv",           # BT.2020 PQ 10-bit with HDR10 side data
    "vfr.mkv": ".mkv",                     # VFR Matroska
    "two_audio_two_subs.mkv": ".mkv",      # 2 audio + 2 subtitle streams
    "vfr_aac.mp4": ".mp4",                 # VFR MP4 with AAC
    "rotated90.mp4": ".mp4",               # rotation 90
    "editlist_cut.mp4": ".mp4",            # edit list hides leading packets
}


def build(folder: str, names=tuple(SUBSET)) -> List[str]:
    """The subset's files in ``folder`` (built from real footage as the corpus builds them)."""
    os.makedirs(folder, exist_ok=True)
    out = []
    for case, fn in M.cases():
        if case.name in names:
            p = os.path.join(folder, case.name)
            if not os.path.exists(p):
                fn(p)
            out.append(p)
    return out


def other_packets(path: str) -> Dict[str, list]:
    """Per audio/subtitle stream ("#i codec"): (time in seconds, bytes) of every packet, in file order."""
    import av
    got: Dict[str, list] = {}
    with av.open(path) as c:
        names = {s.index: f"#{k} {s.type} {s.codec_context.name}" for k, s in
                 enumerate(s for s in c.streams if s.type in ("audio", "subtitle"))}
        if not names:
            return got
        for p in c.demux([s for s in c.streams if s.index in names]):
            if p.size == 0 and p.pts is None:
                continue
            t = p.pts if p.pts is not None else p.dts
            got.setdefault(names[p.stream.index], []).append(
                (None if t is None else round(float(t * p.time_base), 3), bytes(p)))
    return got


def facts(path: str) -> dict:
    f = C.decode_all(path)
    f["times"] = [None if t is None else Fraction(t) for t in f["times"]]
    f["packets"] = other_packets(path)
    return f


def compare(single: str, batch: str) -> List[str]:
    """What differs between the single-process and the batch output (empty: nothing)."""
    a, b = facts(single), facts(batch)
    bad = []
    if b["errors"]:
        bad.append(f"batch output does not decode cleanly: {b['first_error']}")
    if len(a["times"]) != len(b["times"]):
        bad.append(f"frames {len(b['times'])} vs {len(a['times'])}")
    elif a["times"] != b["times"]:
        k = next(i for i, (x, y) in enumerate(zip(a["times"], b["times"])) if x != y)
        bad.append(f"PTS of frame {k}: {b['times'][k]} vs {a['times'][k]}")
    for key in ("streams", "tags", "frame_tags", "format", "depth", "rotation", "hdr", "dts_ok"):
        if a.get(key) != b.get(key):
            bad.append(f"{key}: {b.get(key)} vs {a.get(key)}")
    if Fraction(a.get("sar") or 1) != Fraction(b.get("sar") or 1):
        bad.append(f"SAR {b.get('sar')} vs {a.get('sar')}")
    ra, rb = a.get("rate"), b.get("rate")
    if (ra is None) != (rb is None) or (ra and abs(float(rb) / float(ra) - 1) > 0.02):
        bad.append(f"declared rate {rb} vs {ra}")
    if a["packets"] != b["packets"]:
        for s in sorted(set(a["packets"]) | set(b["packets"])):
            pa, pb = a["packets"].get(s, []), b["packets"].get(s, [])
            if pa != pb:
                bad.append(f"stream {s}: {len(pb)} packets vs {len(pa)}"
                           + ("" if len(pa) != len(pb) else " (same count, other bytes or times)"))
    return bad
