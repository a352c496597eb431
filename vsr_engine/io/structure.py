"""Stage 1, decode: strict walks of a container's own structure, for damage the demuxer steps over in silence.

FFmpeg's demuxers resynchronise past damaged bytes without an error: a GIF whose sub-block length was zeroed reads
several frames as one packet, a Matroska/WebM cluster with a broken element or a block of an unknown track is
skipped, an AVI 'movi' chunk with a broken header is jumped over. GIF and Matroska declare no frame count, so the
frame accounting (:mod:`~vsr_engine.io.accounting`) has nothing to compare with; the structure itself is the check.
Each walker reads only headers (payloads are skipped by their declared sizes) and returns why the structure breaks,
or None for an intact (or unjudged) file. Imports only :mod:`~vsr_engine.io.accounting` (its byte reader).
"""
from __future__ import annotations

import struct
from typing import Callable, NamedTuple, Optional

from .accounting import _random_access

_MAX_STEPS = 5_000_000             # elements / blocks walked at most (then: not judged)


class _Reader(NamedTuple):
    size: int
    get: Callable[[int, int], bytes]      # get(offset, n): the bytes there (fewer at the end of the file)


def _walk(path_or_bytes, fn):
    """``fn(_Reader)`` over a file's bytes (a path or bytes); None when the file cannot be read."""
    with _random_access(path_or_bytes) as (size, read):
        if read is None:
            return None
        try:
            return fn(_Reader(size, read))
        except OSError:
            return None


# ============================================================================================ GIF
def _gif(r: _Reader):
    """(why the block structure breaks or None, images counted or None when the walk did not reach the trailer)."""
    if r.get(0, 6) not in (b"GIF87a", b"GIF89a") or r.size < 13:
        return None, None
    at = 13
    packed = r.get(10, 1)[0]
    if packed & 0x80:                                     # global colour table
        at += 3 << ((packed & 7) + 1)
    images = 0

    def blocks(at):                                       # data sub-blocks up to their 0 terminator
        while at < r.size:
            n = r.get(at, 1)[0]
            at += 1 + n
            if n == 0:
                return at
        return None

    for _ in range(_MAX_STEPS):
        if at >= r.size:                                  # (a file cut before its trailer: gif_cut's too)
            return f"the GIF's blocks run past the end of the file (after {images} image(s))", None
        b = r.get(at, 1)[0]
        if b == 0x3B:                                     # trailer
            return None, images
        if b == 0x21:                                     # extension: label, sub-blocks
            nxt = blocks(at + 2)
        elif b == 0x2C:                                   # image descriptor, local colour table, LZW code size
            d = r.get(at, 10)
            if len(d) < 10:
                return None, None
            nxt = at + 10 + ((3 << ((d[9] & 7) + 1)) if d[9] & 0x80 else 0) + 1
            nxt = blocks(nxt)
            images += 1
        else:
            return (f"the GIF's block structure breaks at byte {at} of {r.size} (after {images} image(s)): the "
                    "demuxer steps over damaged bytes and may join or drop frames"), None
        if nxt is None:
            return (f"the GIF's data sub-blocks from byte {at} run past the end of the file (image {images}): "
                    "a damaged sub-block length; the demuxer may join or drop frames"), None
        at = nxt
    return None, None


def gif_damage(path_or_bytes, fmt_name: str, packets: Optional[int] = None) -> Optional[str]:
    """For a GIF, why its block structure is broken (a damaged sub-block length, a block that is neither an
    extension, an image nor the trailer), or why its images and the demuxer's ``packets`` (those with data) do
    not match -- damaged bytes inside a frame can make the demuxer join frames into one packet --, else None."""
    if (fmt_name or "") != "gif":
        return None
    why, images = _walk(path_or_bytes, _gif) or (None, None)
    if why is None and images is not None and packets is not None and images > packets:
        why = (f"the GIF holds {images} images and the demuxer read {packets} frame packet(s): "
               f"{images - packets} frame(s) joined to others or lost")
    return why


# ============================================================================================ Matroska / WebM
_SEGMENT, _CLUSTER, _TRACKS, _TRACK_ENTRY, _TRACK_NUMBER = 0x18538067, 0x1F43B675, 0x1654AE6B, 0xAE, 0xD7
# Segment children (SeekHead, Info, Tracks, Cluster, Cues, Attachments, Chapters, Tags), and the global elements
_LEVEL1 = {0x114D9B74, 0x1549A966, _TRACKS, _CLUSTER, 0x1C53BB6B, 0x1941A469, 0x1043A770, 0x1254C367,
           0x1B538667}                                     # (+ SignatureSlot, of old files)
_GLOBAL = {0xEC, 0xBF}                                    # Void, CRC-32
# Cluster children: Timestamp, SilentTracks, Position, PrevSize, SimpleBlock, BlockGroup, EncryptedBlock
_CLUSTER_KIDS = {0xE7, 0x5854, 0xA7, 0xAB, 0xA3, 0xA0, 0xAF}
_SIMPLE_BLOCK, _BLOCK_GROUP, _BLOCK = 0xA3, 0xA0, 0xA1


def _vint(r: _Reader, at: int, keep_marker: bool):
    """(value, length, unknown size) of an EBML variable-length integer at ``at``; None past the end / invalid."""
    b = r.get(at, 1)
    if not b or b[0] == 0:
        return None
    n = 8 - b[0].bit_length() + 1
    raw = r.get(at, n)
    if len(raw) < n:
        return None
    v = int.from_bytes(raw, "big")
    if not keep_marker:
        v &= (1 << (7 * n)) - 1
    return v, n, (not keep_marker) and v == (1 << (7 * n)) - 1


def _element(r: _Reader, at: int):
    """(id, data start, data size or None when unknown) of the element at ``at``; None when its header is broken."""
    i = _vint(r, at, True)
    if i is None or i[1] > 4:
        return None
    s = _vint(r, at + i[1], False)
    if s is None:
        return None
    return i[0], at + i[1] + s[1], (None if s[2] else s[0])


def _track_numbers(r: _Reader, at: int, end: int) -> set:
    nums = set()
    while at < end:
        e = _element(r, at)
        if e is None or e[2] is None:
            break
        if e[0] == _TRACK_ENTRY:
            k = e[1]
            while k < e[1] + e[2]:
                c = _element(r, k)
                if c is None or c[2] is None:
                    break
                if c[0] == _TRACK_NUMBER and 0 < c[2] <= 8:
                    nums.add(int.from_bytes(r.get(c[1], c[2]), "big"))
                k = c[1] + c[2]
        at = e[1] + e[2]
    return nums


def _mkv(r: _Reader) -> Optional[str]:
    head = _element(r, 0)
    if head is None or head[0] != 0x1A45DFA3 or head[2] is None:
        return None
    seg = _element(r, head[1] + head[2])
    if seg is None or seg[0] != _SEGMENT:
        return None
    end = r.size if seg[2] is None else seg[1] + seg[2]
    if end > r.size:
        return f"the file ends inside its Matroska Segment ({r.size - seg[1]} of its {seg[2]} bytes; a cut file)"
    tracks, at, steps = None, seg[1], 0

    def broken(where, what):
        return (f"the Matroska structure breaks at byte {where} of {r.size} ({what}): the demuxer skips what "
                "follows up to the next readable cluster")

    def block_ok(data_at):                                # a block's track number is one of the file's tracks
        t = _vint(r, data_at, False)
        return t is None or not tracks or t[0] in tracks

    while at < end:
        e = _element(r, at)
        if e is None:
            return broken(at, "an unreadable element header")
        eid, data, size = e
        if eid not in _LEVEL1 and eid not in _GLOBAL:
            return broken(at, f"element 0x{eid:X} where a top-level element belongs")
        if size is not None and data + size > end:
            if end == r.size:
                return (f"the file ends inside its Matroska element 0x{eid:X} at byte {at} ({r.size - data} of its "
                        f"{size} bytes; a cut file)")
            return broken(at, f"element 0x{eid:X} runs past the end of its Segment")
        if eid == _TRACKS and size is not None:
            tracks = _track_numbers(r, data, data + size)
        if eid != _CLUSTER:
            if size is None:
                return None                               # an unknown-size non-cluster: not judged
            at = data + size
            continue
        stop = end if size is None else data + size
        k = data
        while k < stop:
            steps += 1
            if steps > _MAX_STEPS:
                return None
            c = _element(r, k)
            if c is None:
                return broken(k, "an unreadable element header inside a cluster")
            cid, cdata, csize = c
            if size is None and (cid in _LEVEL1):
                break                                     # an unknown-size cluster ends at the next top-level one
            if cid not in _CLUSTER_KIDS and cid not in _GLOBAL or csize is None:
                return broken(k, f"element 0x{cid:X} inside a cluster")
            if cdata + csize > stop:
                return broken(k, f"element 0x{cid:X} runs past the end of its cluster")
            if cid == _SIMPLE_BLOCK and not block_ok(cdata):
                return broken(k, "a block of a track the file does not have")
            if cid == _BLOCK_GROUP:
                g = cdata
                while g < cdata + csize:
                    b = _element(r, g)
                    if b is None or b[2] is None or b[1] + b[2] > cdata + csize:
                        return broken(g, "a broken element inside a block group")
                    if b[0] == _BLOCK and not block_ok(b[1]):
                        return broken(g, "a block of a track the file does not have")
                    g = b[1] + b[2]
            k = cdata + csize
        at = k
    return None


def mkv_damage(path_or_bytes, fmt_name: str) -> Optional[str]:
    """For a Matroska / WebM file, why its element structure is broken (a cut Segment, an unknown element where a
    top-level or cluster element belongs, an element running past its parent, a block of a track the file does not
    declare), else None."""
    return _walk(path_or_bytes, _mkv) if "matroska" in (fmt_name or "") else None


# ============================================================================================ AVI
def _chunk_id_ok(cid: bytes) -> bool:
    """A 'movi' chunk id: two stream digits + a type ('00dc', '01wb'), an OpenDML index ('ix00'), or JUNK / LIST."""
    if cid in (b"JUNK", b"LIST"):
        return True
    if cid[:2] == b"ix" and cid[2:].isdigit():
        return True
    return cid[:2].isdigit() and cid[2:].isalpha()


def _avi(r: _Reader) -> Optional[str]:
    at = 0
    while at + 12 <= r.size:
        tag, n, form = struct.unpack("<4sI4s", r.get(at, 12))
        if tag != b"RIFF":
            return None
        end = min(r.size, at + 8 + n)
        k = at + 12
        while k + 12 <= end:                              # top-level chunks: find LIST 'movi'
            cid, cn = struct.unpack("<4sI", r.get(k, 8))
            if cid == b"LIST" and r.get(k + 8, 4) == b"movi":
                m, mend = k + 12, min(end, k + 8 + cn)
                steps = 0
                while m + 8 <= mend:
                    steps += 1
                    if steps > _MAX_STEPS:
                        return None
                    mid, mn = struct.unpack("<4sI", r.get(m, 8))
                    if mid == b"LIST":                    # a 'rec ' list: its chunks follow its 12-byte header
                        m += 12
                        continue
                    if not _chunk_id_ok(mid):
                        return (f"the AVI 'movi' list breaks at byte {m} of {r.size} (a chunk id "
                                f"{mid!r}): the demuxer steps over it and may drop frames")
                    m += 8 + mn + (mn & 1)
            k += 8 + cn + (cn & 1)
        at += 8 + n + (n & 1)
    return None


def avi_damage(path_or_bytes, fmt_name: str) -> Optional[str]:
    """For an AVI, why the chunk structure of its 'movi' list is broken (a chunk id that is no stream chunk), else
    None. A cut RIFF is :func:`~vsr_engine.io.accounting.riff_cut`'s."""
    return _walk(path_or_bytes, _avi) if "avi" in (fmt_name or "") else None


def structure_damage(path_or_bytes, fmt_name: str, packets: Optional[int] = None) -> Optional[str]:
    """Why the container's own structure is broken (GIF, Matroska/WebM, AVI), else None; ``packets``: the video
    packets with data the demuxer read (GIF: compared with its images)."""
    return (gif_damage(path_or_bytes, fmt_name, packets) or mkv_damage(path_or_bytes, fmt_name)
            or avi_damage(path_or_bytes, fmt_name))
