"""Strict container walks (vsr_engine/io/structure.py, issue 22): the 20 silent losses the 1,000-mutant fuzz run left
(15 animated GIFs with zeroed or flipped bytes, 4 VP9+Opus WebM, 1 MJPEG+PCM AVI: exit 0 with frames missing)
now come with a damage report (exit 3 in the CLI); intact files from real footage, written the ways FFmpeg writes
them (live Matroska with an unknown-size Segment, OpenDML AVI), are not called damaged."""
from __future__ import annotations

import io
import os
import random
import sys
import warnings

import pytest

av = pytest.importorskip("av")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import fuzz as F  # noqa: E402
import make_corpus as M  # noqa: E402

from vsr_engine.io import structure as S  # noqa: E402
from vsr_engine.io.decode import VideoBytes, VideoReader  # noqa: E402

pytestmark = pytest.mark.skipif(not M.data_available(), reason=f"real clips not found under {M.DATA}")

# `tests/corpus/fuzz.py --mutants 1000 --seed 22`, run 3 (docs/odd_inputs.md): the mutants that exited 0 with
# frames missing
SILENT_BEFORE = {11: "anim.gif", 83: "mjpeg_pcm.avi", 134: "anim.gif", 166: "anim.gif", 189: "anim.gif",
                 213: "anim.gif", 232: "anim.gif", 294: "anim.gif", 313: "vp9_opus.webm", 334: "anim.gif",
                 348: "vp9_opus.webm", 402: "anim.gif", 573: "vp9_opus.webm", 633: "anim.gif",
                 730: "vp9_opus.webm", 783: "anim.gif", 880: "anim.gif", 940: "anim.gif", 969: "anim.gif",
                 994: "anim.gif"}


def decode(data: bytes, name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with VideoReader(VideoBytes(data, name)) as r:
            n = sum(1 for _ in r)
            return n, r.damage_report(n)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("structure_seeds")
    out = {}
    for name, fn in F.ALL_SEEDS.items():                         # all: the mutants' draws depend on every size
        p = str(d / name)
        fn(p)
        out[name] = open(p, "rb").read()
    return out


def test_former_silent_losses_are_reported(seeds):
    """The fuzz run's own mutants (same generator, seed 22): each still loses frames, none silently now."""
    rng = random.Random(22)
    names = sorted(F.ALL_SEEDS)
    full = {n: decode(seeds[n], n)[0] for n in set(SILENT_BEFORE.values())}
    seen = {}
    for i in range(max(SILENT_BEFORE) + 1):
        name = rng.choice(names)
        data, _, what = F.mutate(seeds[name], rng)
        if i in SILENT_BEFORE:
            assert name == SILENT_BEFORE[i]
            seen[i] = (name, what) + decode(data, name)
    assert len(seen) == 20
    for i, (name, what, n, rep) in sorted(seen.items()):
        assert n < full[name], (i, name, what, n)                  # frames are really missing ...
        assert rep, (i, name, what, n)                             # ... and it is said
    kinds = {name: [rep for nm, _, _, rep in seen.values() if nm == name] for name in SILENT_BEFORE.values()}
    assert all("block" in r or "GIF" in r for r in kinds["anim.gif"])
    assert all("Matroska" in r for r in kinds["vp9_opus.webm"])
    assert any("'movi'" in r for r in kinds["mjpeg_pcm.avi"])


def test_intact_files_are_not_damaged(tmp_path, seeds):
    files = {n: seeds[n] for n in set(SILENT_BEFORE.values())}
    p = str(tmp_path / "live.mkv")                                # unknown-size Segment (FFmpeg's live mode)
    M.write_video(p, M.real_frames(), audio="bbb", container_options={"live": "1", "cluster_size_limit": "3000"})
    files["live.mkv"] = open(p, "rb").read()
    p = str(tmp_path / "two_audio_two_subs.mkv")                  # several tracks, subtitles
    M.write_video(p, M.real_frames(), audio="bbb", subs=2)
    files["subs.mkv"] = open(p, "rb").read()
    for name, data in files.items():
        n, rep = decode(data, name)
        assert rep is None and n == 8 - 2 * (name == "anim.gif"), (name, n, rep)
        with av.open(io.BytesIO(data)) as c:
            fmt = c.format.name
        assert S.structure_damage(data, fmt) is None, name


def test_each_walker_names_the_break(seeds, tmp_path):
    gif = bytearray(seeds["anim.gif"])
    why, images = S._walk(bytes(gif), S._gif)
    assert why is None and images == 6
    # the first image's first sub-block length zeroed: its LZW bytes are read as block introducers
    at = gif.index(b"\x21\xf9\x04") + 8                           # after the first graphic control extension
    assert gif[at] == 0x2C
    lzw = at + 10 + ((3 << ((gif[at + 9] & 7) + 1)) if gif[at + 9] & 0x80 else 0)
    gif[lzw + 1] = 0
    assert "GIF" in (S.gif_damage(bytes(gif), "gif") or "")
    assert "6 images" in S.gif_damage(seeds["anim.gif"], "gif", packets=4)   # joined packets, intact structure
    assert S.gif_damage(seeds["anim.gif"], "gif", packets=6) is None
    webm = seeds["vp9_opus.webm"]
    assert "cut file" in S.mkv_damage(webm[:len(webm) * 2 // 3], "matroska,webm")
    k = webm.index(b"\x1f\x43\xb6\x75")                            # the first cluster's id broken
    bad = webm[:k] + b"\x1f\x43\xb6\x00" + webm[k + 4:]
    assert "breaks at byte" in S.mkv_damage(bad, "matroska,webm")
    avi = seeds["mjpeg_pcm.avi"]
    k = avi.index(b"00dc", avi.index(b"movi"))
    bad = avi[:k] + b"\0\0\0\0" + avi[k + 4:]
    assert "'movi'" in S.avi_damage(bad, "avi")
    assert S.structure_damage(avi, "avi") is None and S.structure_damage(b"", "avi") is None
