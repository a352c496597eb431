"""Frame accounting (issue 22): what the container holds against what was decoded and written, so that the three
silent losses the fuzz test left (docs/odd_inputs.md) end as exit 3 with the exact count and the positions in the
run summary: an MPEG-TS file cut at its very end, a Matroska file that loses only its last frame, and an H.264
frame the decoder swallowed without an error. Each file is derived from real footage (Big Buck Bunny, its AAC
audio, ``tests/corpus/make_corpus.py``); intact files stay exit 0."""
from __future__ import annotations

import os
import sys

import pytest

av = pytest.importorskip("av")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import check_corpus as C  # noqa: E402
import make_corpus as M  # noqa: E402

from vsr_engine.io import accounting as A  # noqa: E402
from vsr_engine.io.decode import VideoBytes, VideoReader  # noqa: E402
from vsr_engine.video import partial_dir_for  # noqa: E402

pytestmark = pytest.mark.skipif(not M.data_available(), reason=f"real clips not found under {M.DATA}")


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    out = {}
    for name, kw in {"ts": dict(codec="mpeg2video", audio="mp2"), "mkv": dict(audio="bbb", options={"g": "4"}),
                     "mp4": dict(audio="bbb", options={"g": "4"})}.items():
        p = str(d / f"seed.{name}")
        M.write_video(p, M.real_frames(), **kw)
        out[name] = p
    out["weights"] = C.tiny_weights(str(d))
    return out


def video_packets(path):
    with av.open(path) as c:
        return [(p.pos, p.size, p.pts) for p in c.demux(c.streams.video[0]) if p.size]


def report(data: bytes, name: str):
    with VideoReader(VideoBytes(data, name)) as r:
        n = sum(1 for _ in r)
        return n, r.damage_report()


def upscale_cli(src, out, weights):
    return C.run_cli(["upscale", src, out, "--model", "basicvsr", "--weights", weights, "--window", "4",
                      "--overlap", "2", "--preset", "ultrafast"])


def _write(tmp_path, name, data):
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(data)
    return p


# 1. MPEG-TS cut at its very end ---------------------------------------------------------------------------------
def ts_cut_inside_packet(seed):
    """The fuzz test's silent loss: the transport stream cut at 62 % (inside a 188-byte packet)."""
    data = open(seed, "rb").read()
    return data[:int(len(data) * 0.62)]


def ts_cut_inside_audio_pes(seed):
    """Cut on a 188-byte boundary, but inside the last audio PES packet (which declares its length)."""
    data = open(seed, "rb").read()
    vids = video_packets(seed)
    pos = vids[5][0] + 188 * 3            # after the 6th frame's PES, inside the audio that follows it
    cut = pos - pos % 188
    return data[:cut]


def test_ts_cut_at_its_end_is_reported(tmp_path, seeds):
    n_full, rep = report(open(seeds["ts"], "rb").read(), "intact.ts")
    assert n_full == 8 and rep is None                       # an intact TS is not called damaged
    for make in (ts_cut_inside_packet, ts_cut_inside_audio_pes):
        n, rep = report(make(seeds["ts"]), "cut.ts")
        assert n < 8, make.__name__                          # frames really were lost
        assert rep is not None and "damaged or truncated" in rep, (make.__name__, rep)
        assert "how many cannot be known" in rep and f"decoded {n} frames" in rep, rep
    assert "ends inside a transport-stream packet" in report(ts_cut_inside_packet(seeds["ts"]), "a.ts")[1]
    assert "its last PES packet" in report(ts_cut_inside_audio_pes(seeds["ts"]), "b.ts")[1]


def test_ts_cut_ends_as_exit_3_through_the_cli(tmp_path, seeds):
    src = _write(tmp_path, "cut.ts", ts_cut_inside_packet(seeds["ts"]))
    out = str(tmp_path / "out.mkv")
    rc, so, se = upscale_cli(src, out, seeds["weights"])
    assert rc == 3, (rc, so, se)                             # was exit 0 (4 and 6 of 8 frames out)
    assert "transport-stream packet" in se + so and "Traceback" not in se
    facts = C.decode_all(out)
    assert facts["errors"] == 0 and len(facts["times"]) == 6


# 2. a file that loses only its last frame ---------------------------------------------------------------------------
def test_mkv_losing_only_its_last_frame_is_exit_3_with_the_count(tmp_path, seeds):
    data = open(seeds["mkv"], "rb").read()
    last = video_packets(seeds["mkv"])[-1]
    src = _write(tmp_path, "cut.mkv", data[:last[0]])        # cut just before the last frame's data
    n, rep = report(open(src, "rb").read(), "cut.mkv")
    assert n == 7 and rep is not None
    assert "decoded 7 of 8 frames" in rep and "1 frame(s) missing after 0.280 s" in rep, rep
    out = str(tmp_path / "out.mkv")
    rc, so, se = upscale_cli(src, out, seeds["weights"])
    assert rc == 3 and "decoded 7 of 8 frames" in se + so, (rc, so, se)   # was exit 0 (one frame of slack)
    assert len(C.decode_all(out)["times"]) == 7


# 3. a frame the decoder swallowed ----------------------------------------------------------------------------------
def test_frame_swallowed_by_the_decoder_is_named(tmp_path, seeds):
    data = bytearray(open(seeds["mp4"], "rb").read())
    pos, size, pts = video_packets(seeds["mp4"])[-1]
    data[pos:pos + 48] = bytes(48)      # the fuzz test's mutant: the last frame's NAL header zeroed, no error raised
    src = _write(tmp_path, "zeroed.mp4", bytes(data))
    n, rep = report(bytes(data), "zeroed.mp4")
    assert n == 7 and rep is not None
    assert "decoded 7 of 8 frames" in rep and "no picture for 1 of the 8 frame(s) read: frame #7 (0.280 s)" in rep
    out = str(tmp_path / "out.mp4")
    rc, so, se = upscale_cli(src, out, seeds["weights"])
    assert rc == 3 and "frame #7 (0.280 s)" in se + so, (rc, so, se)       # was exit 0
    assert len(C.decode_all(out)["times"]) == 7 and not os.path.exists(partial_dir_for(out))


def test_intact_seeds_are_not_damaged(seeds):
    for k in ("ts", "mkv", "mp4"):
        n, rep = report(open(seeds[k], "rb").read(), "x." + k)
        assert (n, rep) == (8, None), (k, rep)


# 4. frames written: a decoded frame the run did not write ----------------------------------------------------------
def test_a_frame_not_written_is_reported(seeds):
    with VideoReader(seeds["mkv"]) as r:
        n = sum(1 for _ in r)
        assert r.damage_report(written=n) is None
        rep = r.damage_report(written=n - 1)
    assert rep is not None and "1 decoded frame(s) were not written (wrote 7 of 8)" in rep


# 5. the pieces ------------------------------------------------------------------------------------------------------
def test_vp8_vp9_hidden_frames_are_not_counted_as_lost():
    assert A.shows_picture("h264", b"\x00") is True
    assert A.shows_picture("vp8", bytes([0x10, 0, 0])) is True          # show_frame bit set
    assert A.shows_picture("vp8", bytes([0x00, 0, 0])) is False
    # VP9 profile 0: frame_marker 10, profile 00, show_existing 0, frame_type, show_frame, ...
    assert A.shows_picture("vp9", bytes([0b10000010])) is True
    assert A.shows_picture("vp9", bytes([0b10000000])) is False
    assert A.shows_picture("vp9", bytes([0b10001000])) is True          # show_existing_frame
    assert A.shows_picture("vp9", bytes([0b10000000, 0, 0xC1])) is True  # superframe index: shows its last frame


def test_ts_cut_checks_only_transport_streams(tmp_path, seeds):
    data = open(seeds["ts"], "rb").read()
    assert A.ts_cut(data, "mpegts") is None
    assert A.ts_cut(data[:-1], "mpegts").startswith("the file ends inside a transport-stream packet (187 of")
    assert A.ts_cut(data[:-1], "matroska,webm") is None
    p = _write(tmp_path, "x.ts", data[:-100])
    assert "(88 of its 188 bytes)" in A.ts_cut(p, "mpegts")


# 4. found by the 1,000-mutant fuzz run: a fragmented MP4 and an MJPEG AVI cut, both exit 0 before -------------
@pytest.mark.parametrize("kind", ["fragmented.mp4", "mjpeg_pcm.avi", "anim.gif"])
def test_cut_fragmented_mp4_avi_and_gif_are_reported(tmp_path, kind):
    p = str(tmp_path / kind)
    total = 8
    if kind == "fragmented.mp4":
        M.fragmented(p)
    elif kind == "anim.gif":
        M.write_video(p, M.real_frames(M.CARPHONE, n=6, w=44, h=36, skip=0), codec="gif", pix_fmt="rgb8", rate=10)
        total = 6
    else:
        M.write_video(p, M.real_frames(), codec="mjpeg", pix_fmt="yuvj420p", audio="pcm_s16le")
    data = open(p, "rb").read()
    n, rep = report(data, kind)
    assert n == total and rep is None                   # intact: nothing to report
    n, rep = report(data[:int(len(data) * 0.3)], kind)  # cut at 30 %: fewer frames, and said so
    assert n < total and rep is not None
    want = {"fragmented.mp4": "box", "mjpeg_pcm.avi": "RIFF 'AVI ' chunk", "anim.gif": "GIF trailer"}
    assert want[kind] in rep, rep


def test_box_cut_reads_the_top_level_boxes():
    import struct
    box = lambda kind, body: struct.pack(">I4s", 8 + len(body), kind) + body  # noqa: E731
    whole = box(b"ftyp", b"isom" * 2) + box(b"moov", b"\0" * 20) + box(b"mdat", b"\1" * 40)
    assert A.box_cut(whole, "mov,mp4,m4a,3gp,3g2,mj2") is None
    assert "'mdat' box (30 of its 48 bytes)" in A.box_cut(whole[:-18], "mov,mp4,m4a,3gp,3g2,mj2")
    assert A.box_cut(whole[:-18], "matroska,webm") is None
