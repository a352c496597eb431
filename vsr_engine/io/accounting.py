"""Stage 1, decode: frame accounting. What the container holds (packets demuxed, the frame count of an MP4/MOV
index, the end its header declares, whole MPEG-TS packets) against what the decoder gave and what the run wrote,
so that a lost frame is counted and placed instead of passing silently: :class:`FrameAccount` is fed by
:class:`~vsr_engine.io.decode.VideoReader` and turned into the reasons of its damage report. A leaf module (no
imports from the rest of ``vsr_engine.io``)."""
from __future__ import annotations

import collections
import contextlib
import os
from array import array
from fractions import Fraction
from typing import List, Optional, Tuple

# containers whose index lists every sample (stsz): their header frame count is exact
_INDEXED = ("mov", "mp4")
# packet strides of MPEG transport streams: plain, with a 4-byte timecode (M2TS), with 16 bytes of FEC
_TS_STRIDES = ((188, 0), (192, 4), (204, 0))
_SHOW_MAX = 5                      # positions listed in a message


def _fmt_t(t: Optional[Fraction]) -> str:
    return "?" if t is None else f"{float(t):.3f} s"


def shows_picture(codec: str, data) -> bool:
    """Whether one packet of ``codec`` holds a picture the decoder shows. Only VP8/VP9 store hidden frames (an
    alternate reference) in packets of their own; a VP9 superframe shows its last frame. Everything else: True."""
    if codec not in ("vp8", "vp9") or data is None:
        return True
    try:
        b = memoryview(data)
        if not len(b):
            return True
        if codec == "vp8":
            return bool((b[0] >> 4) & 1)                  # frame tag: show_frame bit
        last = b[-1]
        if last & 0xE0 == 0xC0:                           # superframe index: it holds a shown frame
            return True
        h = b[0]
        if (h >> 6) != 2:                                 # frame_marker
            return True
        profile = ((h >> 5) & 1) | (((h >> 4) & 1) << 1)
        bit = 3 if profile < 3 else 2                     # show_existing_frame (profile 3: a reserved bit first)
        if (h >> bit) & 1:                                # show_existing_frame: shows a stored frame
            return True
        return bool((h >> (bit - 2)) & 1)                 # after frame_type: show_frame
    except Exception:  # pragma: no cover - a malformed packet is judged by the decoder
        return True


@contextlib.contextmanager
def _random_access(path_or_bytes):
    """``(size, read(offset, n))`` over a file's bytes (a path or bytes); ``(0, None)`` when it cannot be read."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = memoryview(path_or_bytes)
        yield len(data), lambda a, n: bytes(data[a:a + n])
        return
    try:
        size = os.path.getsize(path_or_bytes)
        fh = open(path_or_bytes, "rb")
    except (OSError, TypeError, ValueError):
        yield 0, None
        return

    def read(a, n):
        fh.seek(a)
        return fh.read(n)
    try:
        yield size, read
    finally:
        fh.close()


_TS_TAIL = 4 << 20                 # bytes at the end of a transport stream looked at for a cut PES packet


def gif_cut(path_or_bytes, fmt_name: str) -> Optional[str]:
    """For a GIF, why it looks cut at its end, else None: it does not end with the GIF trailer byte (0x3B)."""
    if (fmt_name or "") != "gif":
        return None
    try:
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            last = bytes(memoryview(path_or_bytes)[-1:])
        else:
            with open(path_or_bytes, "rb") as fh:
                fh.seek(0, 2)
                if fh.tell() == 0:
                    return None
                fh.seek(-1, 2)
                last = fh.read(1)
    except (OSError, TypeError, ValueError):
        return None
    return None if last == b"\x3b" else "the file ends without the GIF trailer (cut)"


def riff_cut(path_or_bytes, fmt_name: str) -> Optional[str]:
    """For an AVI, why it looks cut at its end, else None: a RIFF chunk ('AVI ', or an OpenDML 'AVIX' after it)
    declares more bytes than the file holds. (The AVI header's frame count is not exact: encoder delay and
    dropped repeat frames make it differ from the packets of intact files.)"""
    if "avi" not in (fmt_name or ""):
        return None
    import struct
    with _random_access(path_or_bytes) as (size, read):
        if read is None:
            return None
        at = 0
        while at + 12 <= size:
            tag, n, form = struct.unpack("<4sI4s", read(at, 12))
            if tag != b"RIFF":
                return None
            if at + 8 + n > size:
                return f"the file ends inside its RIFF '{form.decode('latin-1', 'replace')}' chunk " \
                       f"({size - at} of its {n + 8} bytes)"
            at += 8 + n + (n & 1)
        return None


def box_cut(path_or_bytes, fmt_name: str) -> Optional[str]:
    """For an MP4/MOV file (fragmented ones included), why it looks cut at its end, else None: its last top-level
    box (``mdat``, ``moof``, ...) declares more bytes than the file holds."""
    if "mp4" not in (fmt_name or "") and "mov" not in (fmt_name or ""):
        return None
    import struct
    with _random_access(path_or_bytes) as (size, read):
        if read is None:
            return None
        at = 0
        for _ in range(100000):
            if at + 8 > size:
                return None if at == size else (f"the file ends inside a box header ({size - at} of its 8 bytes)")
            n, kind = struct.unpack(">I4s", read(at, 8))
            if n == 1:
                if at + 16 > size:
                    return None
                n = struct.unpack(">Q", read(at + 8, 8))[0]
            elif n == 0:
                return None                      # the last box runs to the end of the file
            if n < 8:
                return None                      # not a box structure we can judge
            if at + n > size:
                name = kind.decode("latin-1", "replace")
                return f"the file ends inside its '{name}' box ({size - at} of its {n} bytes)"
            at += n
        return None


def ts_cut(path_or_bytes, fmt_name: str) -> Optional[str]:
    """For an MPEG transport stream, why it looks cut at its end, else None: an incomplete last TS packet, or a
    last PES packet (of a stream whose PES packets declare their length: audio, mostly) that ends before the
    length it declares. A stream cut between whole PES packets gives no sign (MPEG-TS declares no end)."""
    if "mpegts" not in (fmt_name or ""):
        return None
    with _random_access(path_or_bytes) as (size, read):
        if read is None:
            return None
        head = read(0, 4 * 204 + 8)
        for stride, off in _TS_STRIDES:
            if size < stride + off or not all(head[off + k * stride] == 0x47 for k in range(4)
                                               if off + k * stride < min(size, len(head))):
                continue
            rest = (size - off) % stride
            if rest:
                return f"the file ends inside a transport-stream packet ({rest} of its {stride} bytes)"
            start = max(0, size - _TS_TAIL)
            start = start - (start - off) % stride if start > off else off
            tail = read(start, size - start)
            pes = {}                                   # pid -> [declared bytes, bytes present]
            for a in range(0, len(tail) - stride + 1 + off, stride):
                pk = tail[a:a + 188]
                if len(pk) < 188 or pk[0] != 0x47:
                    return None                        # lost sync: not judged
                pid = ((pk[1] & 0x1F) << 8) | pk[2]
                afc = (pk[3] >> 4) & 3
                if not afc & 1:
                    continue
                pay = 4 + (1 + pk[4] if afc & 2 else 0)
                if pay >= 188:
                    continue
                body = pk[pay:]
                if pk[1] & 0x40:                       # a PES (or section) starts here
                    if body[:3] == b"\0\0\1" and len(body) >= 6:
                        n = (body[4] << 8) | body[5]
                        pes[pid] = [6 + n, len(body)] if n else None
                    else:
                        pes.pop(pid, None)
                elif pes.get(pid) is not None:
                    pes[pid][1] += len(body)
            for pid, v in sorted(pes.items()):
                if v is not None and v[1] < v[0]:
                    return (f"its last PES packet (PID {pid}) holds {v[1]} of the {v[0]} bytes it declares (a cut "
                            "file)")
            return None
        return None


class FrameAccount:
    """Counts for one video stream: packets demuxed (with or without data, discarded by an edit list, hidden
    VP8/VP9 frames), frames decoded, and the PTS of both, to find which packets gave no picture."""

    def __init__(self, codec: str, fmt_name: str, header_frames: Optional[int], fps: Optional[Fraction]):
        self.codec = codec or ""
        self.fmt_name = fmt_name or ""
        self.header_frames = header_frames if any(k in self.fmt_name for k in _INDEXED) else None
        self.fps = Fraction(fps) if fps else None
        self.packets = 0            # packets demuxed (the final flush packet not counted)
        self.empty = 0              # packets without data (nothing to decode)
        self.discarded = 0          # packets before an edit list's start: decoded, their frames dropped on purpose
        self.hidden = 0             # VP8/VP9 packets that hold only a hidden frame
        self.frames = 0             # frames the decoder gave
        self.time_base: Optional[Fraction] = None
        self._pk_pts = array("q")   # PTS of the packets that should each give a shown frame
        self._fr_pts = array("q")   # PTS of the frames decoded
        self._pts_ok = True         # every such packet and frame has a PTS (positions can be named)
        self.min_dur: Optional[int] = None   # smallest packet duration seen (time base units)
        self.max_dur: Optional[int] = None   # largest
        self.last_end: Optional[Fraction] = None   # end (s) of the last packet by time
        self.last_end_exact = False                # ... from the packet's own duration (not the frame rate)

    # -- feeding -------------------------------------------------------------------------------------------
    def packet(self, p) -> None:
        self.packets += 1
        if p.time_base and self.time_base is None:
            self.time_base = Fraction(p.time_base)
        if p.is_discard:
            self.discarded += 1
            return
        if not p.size:
            self.empty += 1
            return
        if self.codec in ("vp8", "vp9") and not shows_picture(self.codec, p):
            self.hidden += 1
            return
        t = p.pts if p.pts is not None else p.dts
        if t is None:
            self._pts_ok = False
        else:
            self._pk_pts.append(int(t))
        d = int(p.duration or 0)
        if d > 0 and (self.min_dur is None or d < self.min_dur):
            self.min_dur = d
        if d > 0 and (self.max_dur is None or d > self.max_dur):
            self.max_dur = d
        if t is not None and p.time_base:
            tb = Fraction(p.time_base)
            exact = d > 0
            if not d and self.fps:
                d = max(1, int(round(1 / self.fps / tb)))
            end = (t + d) * tb
            if self.last_end is None or end > self.last_end:
                self.last_end, self.last_end_exact = end, exact

    def frame(self, f) -> None:
        self.frames += 1
        if f.pts is None:
            self._pts_ok = False
        else:
            self._fr_pts.append(int(f.pts))

    # -- judging -------------------------------------------------------------------------------------------
    @property
    def expected(self) -> int:
        """Shown frames the packets read should give."""
        return self.packets - self.empty - self.discarded - self.hidden

    @property
    def cfr(self) -> bool:
        """Every packet read carried the same duration (a constant frame rate)."""
        return self.min_dur is not None and self.min_dur == self.max_dur

    def period(self) -> Fraction:
        """One frame's duration (s): the shortest packet duration seen, else the frame rate's, else 1/25."""
        if self.min_dur and self.time_base:
            return self.min_dur * self.time_base
        return 1 / self.fps if self.fps else Fraction(1, 25)

    def swallowed(self) -> Tuple[int, List[Tuple[int, Optional[Fraction]]]]:
        """Packets that gave no picture: (count, [(position in presentation order, time s)]); the list is empty
        when the positions cannot be named (frames or packets without PTS)."""
        n = self.expected - self.frames
        if n <= 0:
            return 0, []
        if not self._pts_ok:
            return n, []
        missing = collections.Counter(self._pk_pts) - collections.Counter(self._fr_pts)
        if sum(missing.values()) != n:
            return n, []
        order = sorted(self._pk_pts)
        first = {}
        for i, t in enumerate(order):
            first.setdefault(t, i)
        tb = self.time_base
        pos = []
        for t in sorted(missing.elements()):
            pos.append((first[t], t * tb if tb else None))
        return n, pos

    def index_shortfall(self) -> int:
        """Frames an MP4/MOV index lists that were never read (the file ends before its data)."""
        if not self.header_frames:
            return 0
        return max(0, self.header_frames - self.packets)

    def describe_positions(self, pos: List[Tuple[int, Optional[Fraction]]]) -> str:
        if not pos:
            return "positions unknown (no timestamps)"
        items = [f"#{i} ({_fmt_t(t)})" for i, t in pos[:_SHOW_MAX]]
        more = f" and {len(pos) - _SHOW_MAX} more" if len(pos) > _SHOW_MAX else ""
        return "frame " + ", ".join(items) + more
