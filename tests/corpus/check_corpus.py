"""Run ``vsr-engine upscale`` (the real CLI code path, in-process) on every corpus file and check what a careful user
expects: exit status, message, frames in = frames out, PTS, streams copied, tags, SAR, bit depth, HDR side data,
frame rate, monotonic DTS, and an output that FFmpeg (PyAV) decodes without error.

    python3 tests/corpus/check_corpus.py [FOLDER]      # builds the corpus there (default: a temp folder), prints a table
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from fractions import Fraction
from typing import List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_corpus as M  # noqa: E402


def tiny_weights(folder: str) -> str:
    """A tiny random BasicVSR checkpoint (the CLI reads the architecture from the file): fast corpus runs."""
    import torch
    from vsr_engine import load_model
    p = os.path.join(folder, "tiny_basicvsr.pth")
    if not os.path.exists(p):
        torch.manual_seed(0)
        m = load_model("basicvsr", weights=False, num_feat=8, num_block=1)
        torch.save({"params": m.state_dict()}, p)
    return p


def run_cli(args: List[str]) -> Tuple[int, str, str]:
    from vsr_engine import cli
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in args])
    return rc, out.getvalue(), err.getvalue()


def decode_all(path: str) -> dict:
    """Every frame's time, plus stream facts; ``errors`` counts decode/demux errors (0 = FFmpeg decodes it)."""
    import av
    facts = {"times": [], "errors": 0, "first_error": None, "streams": [], "dts_ok": True}
    try:
        c = av.open(path, metadata_errors="replace")
    except av.error.FFmpegError as e:
        facts["errors"] += 1
        facts["first_error"] = str(e)
        return facts
    with c:
        vs = [s for s in c.streams.video if not (int(s.disposition) & 0x400)]
        if not vs:
            return facts
        v = vs[0]
        facts["streams"] = [f"{s.type} {s.codec_context.name if s.codec_context else '?'}"
                            for s in c.streams if s.index != v.index]
        facts["rate"] = v.average_rate
        facts["base_rate"] = v.base_rate
        facts["sar"] = v.sample_aspect_ratio or v.codec_context.sample_aspect_ratio
        cc = v.codec_context
        facts["tags"] = (cc.colorspace, cc.color_range, cc.color_primaries, cc.color_trc)
        last_dts = None
        first = None
        try:
            for p in c.demux(v):
                if p.dts is not None and p.size:
                    if last_dts is not None and p.dts <= last_dts:
                        facts["dts_ok"] = False
                    last_dts = p.dts
                try:
                    for f in p.decode():
                        if first is None:
                            first = f
                        facts["times"].append(None if f.pts is None else f.pts * f.time_base)
                except av.error.FFmpegError as e:
                    facts["errors"] += 1
                    facts["first_error"] = facts["first_error"] or str(e)
        except av.error.FFmpegError as e:
            facts["errors"] += 1
            facts["first_error"] = facts["first_error"] or str(e)
        if first is not None:
            facts["format"] = first.format.name
            facts["depth"] = max(comp.bits for comp in first.format.components)
            facts["rotation"] = int(round(first.rotation or 0))
            facts["frame_tags"] = (first.colorspace, first.color_range, first.color_primaries, first.color_trc)
            facts["hdr"] = {str(sd.type).split(".")[-1]: bytes(sd) for sd in first.side_data
                            if str(sd.type).endswith(("MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"))}
    return facts


def check_case(case: "M.Case", folder: str, outdir: str, weights: str) -> Tuple[List[str], str]:
    """(problems, one line saying what the run produced) for one corpus case."""
    inp = os.path.join(folder, case.name)
    stem = case.name.replace(" ", "_").replace(".", "_")
    outp = os.path.join(outdir, f"{stem}_x4{case.out_ext}")
    from vsr_engine.video import partial_dir_for
    rc, so, se = run_cli(["upscale", inp, outp, "--model", "basicvsr", "--weights", weights, "--window", "4",
                          "--overlap", "2", "--preset", "ultrafast", "-q"])
    problems = []
    lines = [ln for ln in se.strip().splitlines() if ln.strip()]
    said = lines[-1] if lines else so.strip().splitlines()[-1] if so.strip() else ""
    if rc != case.rc:
        problems.append(f"exit {rc}, expected {case.rc}: {se.strip()[:300]}")
    if "Traceback" in se:
        problems.append("traceback without --debug")
    if case.msg and case.msg not in se:
        problems.append(f"message lacks {case.msg!r}: {se.strip()[:200]}")
    if case.rc == 0 and se.strip():
        problems.append(f"unexpected warning: {se.strip()[:200]}")
    if rc == 2:
        if os.path.exists(outp) or os.path.exists(partial_dir_for(os.path.abspath(outp))):
            problems.append("a failed run left a file at OUTPUT or a partial folder")
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines of error, expected 1")
        return problems, f"exit {rc}: {said[:110]}"
    if rc not in (0, 3) or not os.path.exists(outp):
        problems.append("no output")
        return problems, f"exit {rc}: {said[:110]}"
    a, b = decode_all(inp), decode_all(outp)
    if b["errors"]:
        problems.append(f"output does not decode cleanly: {b['errors']} error(s), {b['first_error']}")
    if not b["dts_ok"]:
        problems.append("output DTS not strictly increasing")
    want = case.frames if case.frames is not None else len(a["times"])
    if len(b["times"]) != want:
        problems.append(f"{len(b['times'])} frames out, {want} in")
    if case.pts_exact and a["times"] and len(a["times"]) == len(b["times"]):
        off = [float(x - y) for x, y in zip(a["times"], b["times"]) if x is not None and y is not None]
        if off and max(abs(o) for o in off) > 1e-3:
            problems.append(f"PTS moved by up to {max(abs(o) for o in off) * 1000:.1f} ms")
    if b["streams"] != a["streams"] or len(b["streams"]) != len(case.streams):
        problems.append(f"streams {b['streams']}, input has {a['streams']}, expected {len(case.streams)}")
    sar_out = b.get("sar") or Fraction(1)
    if Fraction(sar_out) != Fraction(case.sar or 1) and not (case.sar is None and Fraction(sar_out) in (0, 1)):
        problems.append(f"SAR {sar_out}, expected {case.sar or '1:1'}")
    if b.get("depth") != case.depth:
        problems.append(f"bit depth {b.get('depth')} ({b.get('format')}), expected {case.depth}")
    if case.tags:
        got = b.get("frame_tags") or ()
        for name, w, g in zip(("colorspace", "range", "primaries", "trc"), case.tags, got):
            if w is not None and int(g) != w:
                problems.append(f"{name} {int(g)}, expected {w}")
    if case.hdr:
        if not a.get("hdr") or b.get("hdr") != a.get("hdr"):
            problems.append(f"HDR side data {sorted(b.get('hdr') or {})} != input's {sorted(a.get('hdr') or {})}")
    if b.get("rotation", 0) != case.rotation:
        problems.append(f"rotation {b.get('rotation')}, expected {case.rotation}")
    rin, rout = a.get("rate"), b.get("rate")
    if not case.name.startswith("vfr") and rin and (not rout or abs(float(rout) / float(rin) - 1) > 0.02):
        problems.append(f"frame rate {rout} (input {rin})")
    if rout and float(rout) > 240:
        problems.append(f"declares {float(rout):g} fps")
    warn = f"; {lines[-1][:90]}" if lines else ""
    return problems, (f"exit {rc}, {len(b['times'])}/{len(a['times'])} frames, {b.get('format')}, "
                      f"{', '.join(b['streams']) or 'no other streams'}{warn}")


def run_all(folder: Optional[str] = None, only: Optional[List[str]] = None):
    tmp = tempfile.mkdtemp(prefix="vsr_corpus_")
    folder = folder or os.path.join(tmp, "in")
    cases = M.build(folder)
    outdir = os.path.join(tmp, "out")
    os.makedirs(outdir, exist_ok=True)
    w = tiny_weights(tmp)
    res = []
    for c in cases:
        if only and c.name not in only:
            continue
        probs, what = check_case(c, folder, outdir, w)
        res.append((c, probs, what))
    return res


if __name__ == "__main__":
    sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..", "..")))
    import torch
    torch.set_num_threads(1)
    res = run_all(sys.argv[1] if len(sys.argv) > 1 else None, only=sys.argv[2:] or None)
    bad = 0
    for c, probs, what in res:
        bad += bool(probs)
        print(f"| {c.name} | {c.why} | {'ok' if not probs else 'FAIL: ' + '; '.join(probs)} | {what} |")
    print(f"{len(res) - bad} of {len(res)} as expected")
