"""Regression tests for the seven failure classes of issue 12, each on small clips derived from real footage
(``tests/corpus/make_corpus.py``): Matroska frame rate, intact files called damaged, SAR, cover art, HDR10 and bit
depth, allocator failures, and CLI advice."""
from __future__ import annotations

import os
import sys
from fractions import Fraction

import pytest

av = pytest.importorskip("av")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import check_corpus as C  # noqa: E402
import make_corpus as M  # noqa: E402

from vsr_engine import cli  # noqa: E402
from vsr_engine.engine import Engine  # noqa: E402
from vsr_engine.video import VideoReader, VsrInputError, partial_dir_for  # noqa: E402
from test_video import Nearest, _fast_cpu  # noqa: E402,F401

pytestmark = pytest.mark.skipif(not M.data_available(), reason=f"real clips not found under {M.DATA}")

VFR_MS = [0, 40, 120, 130, 200, 330, 360, 400]


def upscale(src, dst, **kw):
    return Engine(Nearest(2), window=4, overlap=1).run(str(src), str(dst), preset="ultrafast", **kw)


def packets_dts(path):
    with av.open(str(path)) as c:
        return [p.dts for p in c.demux(c.streams.video[0]) if p.dts is not None]


# 1. Matroska output declares the real frame rate, monotonic DTS with VFR -------------------------------------------
@pytest.mark.parametrize("vfr", [False, True])
def test_mkv_output_declares_the_real_frame_rate(tmp_path, vfr):
    src = tmp_path / "in.mkv"
    M.write_video(src, M.real_frames(), pts=VFR_MS if vfr else None, tb=Fraction(1, 1000) if vfr else None)
    out = tmp_path / "out.mkv"
    upscale(src, out)
    a, b = C.decode_all(str(src)), C.decode_all(str(out))
    assert b["rate"] == a["rate"] == 25 and b["base_rate"] == 25          # was 1000 ("1k fps")
    assert b["times"] == a["times"] and b["errors"] == 0
    d = packets_dts(out)
    assert all(x < y for x, y in zip(d, d[1:]))


# 2. Intact files are not called damaged; damaged ones are ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["vfr_mkv", "edit_list", "cinepak_repeat", "mpeg4_avi", "start_10s"])
def test_intact_files_are_not_called_damaged(tmp_path, kind):
    p = str(tmp_path / {"vfr_mkv": "a.mkv", "edit_list": "a.mp4", "cinepak_repeat": "a.avi", "mpeg4_avi": "b.avi",
                        "start_10s": "c.mkv"}[kind])
    if kind == "vfr_mkv":
        M.write_video(p, M.real_frames(), pts=VFR_MS, tb=Fraction(1, 1000), fmt="matroska")
    elif kind == "edit_list":
        M.edit_list_mp4(p)
    elif kind == "cinepak_repeat":
        M.cinepak_avi(p)
    elif kind == "mpeg4_avi":
        M.write_video(p, M.real_frames(), codec="mpeg4", audio="libmp3lame")
    else:
        M.write_video(p, M.real_frames(), pts=[250 + i for i in range(8)])
    with VideoReader(p) as r:
        n = sum(1 for _ in r)
        assert n == (6 if kind == "cinepak_repeat" else 8)
        assert r.damage_report() is None


@pytest.mark.parametrize("how", [dict(cut_at=0.6), dict(zero_at=0.55, zero_len=300), dict(cut_at=0.5, fmt="mp4")])
def test_damaged_files_are_reported(tmp_path, how):
    p = str(tmp_path / ("d.mp4" if how.get("fmt") == "mp4" else "d.mkv"))
    M._damaged(p, **how)
    if how.get("fmt") == "mp4":       # cut before its index: cannot be opened at all
        with pytest.raises(VsrInputError, match="damaged or truncated"):
            VideoReader(p)
        return
    with VideoReader(p) as r:
        n = sum(1 for _ in r)
        rep = r.damage_report()
    assert n >= 1 and rep is not None and "damaged or truncated" in rep, rep


# 3. SAR kept --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".mov"])
def test_anamorphic_input_keeps_its_pixel_aspect(tmp_path, ext):
    src = tmp_path / "dv.mkv"
    M.write_video(src, M.real_frames(w=48, h=36), sar=Fraction(4, 3))
    out = tmp_path / f"out{ext}"
    upscale(src, out)
    assert C.decode_all(str(out))["sar"] == Fraction(4, 3)


# 4. cover art is not video ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,codec,pic,ext", [("mp3", "libmp3lame", "png", ".mp3"), ("mp4", "aac", "mjpeg", ".m4a")])
def test_audio_file_with_cover_art_is_refused(tmp_path, fmt, codec, pic, ext):
    p = tmp_path / f"song{ext}"
    M.cover_art_audio(str(p), fmt, codec, pic=pic)
    out = tmp_path / "out.mp4"
    with pytest.raises(VsrInputError, match="no video stream .*cover art"):
        upscale(p, out)
    assert not out.exists() and not os.path.exists(partial_dir_for(str(out)))


# 5. bit depth and HDR10 metadata kept -------------------------------------------------------------------------------
def _hdr_src(path):
    M.write_video(path, M.real_frames(), codec="libx265", pix_fmt="yuv420p10le",
                  tags=dict(colorspace=9, color_range=1, color_primaries=9, color_trc=16),
                  options={"x265-params": f"log-level=none:pools=1:frame-threads=1:hdr10=1:master-display={M.MD}:"
                                          "max-cll=1000,400"})


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_hdr10_metadata_and_bit_depth_kept(tmp_path, codec):
    src = tmp_path / "hdr.mkv"
    _hdr_src(src)
    out = tmp_path / "out.mkv"
    upscale(src, out, codec=codec)
    a, b = C.decode_all(str(src)), C.decode_all(str(out))
    assert set(a["hdr"]) == {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"} and b["hdr"] == a["hdr"]
    assert b["depth"] == 10 and b["format"] == "yuv420p10le" and b["frame_tags"] == a["frame_tags"]


def test_bit_depth_default_and_override(tmp_path):
    s8, s10 = tmp_path / "s8.mp4", tmp_path / "s10.mp4"
    M.write_video(s8, M.real_frames())
    M.write_video(s10, M.real_frames(), pix_fmt="yuv420p10le")
    upscale(s8, tmp_path / "o8.mp4")
    upscale(s10, tmp_path / "o10.mp4")
    upscale(s10, tmp_path / "o10_8.mp4", pix_fmt="yuv420p")
    assert C.decode_all(str(tmp_path / "o8.mp4"))["format"] == "yuv420p"
    assert C.decode_all(str(tmp_path / "o10.mp4"))["format"] == "yuv420p10le"
    assert C.decode_all(str(tmp_path / "o10_8.mp4"))["format"] == "yuv420p"


def test_hdr_warning_for_an_encoder_that_cannot_write_it():
    from vsr_engine.io.encode import hdr_encoder_options
    md = {"mastering": {"r": (Fraction(17, 25), Fraction(8, 25)), "g": (Fraction(53, 200), Fraction(69, 100)),
                        "b": (Fraction(3, 20), Fraction(3, 50)), "wp": (Fraction(3127, 10000), Fraction(329, 1000)),
                        "min_lum": Fraction(1, 10000), "max_lum": Fraction(1000)}, "cll": (1000, 400)}
    opts, warn = hdr_encoder_options("libx264", md)
    assert opts == {"x264-params": f"mastering-display={M.MD}:cll=1000,400"} and warn is None
    opts, warn = hdr_encoder_options("ffv1", md)
    assert opts == {} and "libx264" in warn


# 6. allocator failures get the out-of-memory error, not "internal error" -----------------------------------------
@pytest.mark.parametrize("msg", [
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
    "22548578304 bytes. Error code 12 (Cannot allocate memory)",
    "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 23.65 GiB total capacity)",
])
def test_allocator_failure_is_a_clear_error(tmp_path, capsys, monkeypatch, msg):
    src = tmp_path / "in.mp4"
    M.write_video(src, M.real_frames())

    def boom(self, *a, **k):
        raise RuntimeError(msg)
    monkeypatch.setattr(Engine, "run", boom)
    w = C.tiny_weights(str(tmp_path))
    rc = cli.main(["upscale", str(src), str(tmp_path / "o.mp4"), "--model", "basicvsr", "--weights", w, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("vsr-engine: error: out of memory (could not allocate") and "--window" in err[0]
    assert "internal error" not in err[0]


# 7. CLI advice names CLI flags and containers that work -----------------------------------------------------------
def test_cli_messages_name_cli_flags(tmp_path, capsys):
    src = tmp_path / "in.mp4"
    M.write_video(src, M.real_frames(), audio="bbb")
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"x")
    rc = cli.main(["upscale", str(src), str(out), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--force" in err and "force=True" not in err and "=" not in err.split("exists")[1]
    assert cli._cli_text("pass --resume (resume=True) or --force (force=True)") == "pass --resume or --force"


def test_mov_text_into_mkv_suggests_a_container_that_holds_it(tmp_path, capsys):
    src = tmp_path / "sub.mp4"
    M._copy_fixture("movtext_sub.mp4", str(src))
    out = tmp_path / "out.mkv"
    rc = cli.main(["upscale", str(src), str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "(mov_text)" in err and "use a .mp4 or .mov output" in err and ".mkv output" not in err
    assert not out.exists()
