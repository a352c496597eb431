"""vsr_engine.distributed without Ray: plan, frame index, seek+decode, segment worker, merge, manifest, CLI."""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distributed_helpers import (BBB, FAST_ENC, UP4_SPEC, audio_packets, check_output,  # noqa: E402
                                 make_marked_clip, read_ids, video_pts)

from vsr_engine.distributed import index_video, plan_segments  # noqa: E402
from vsr_engine.distributed import manifest as M  # noqa: E402
from vsr_engine.distributed.merge import MergeError, merge_segments  # noqa: E402
from vsr_engine.distributed.worker import SegmentWorker, decode_range  # noqa: E402
from vsr_engine.video import VideoReader, VsrInputError  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(BBB), reason="shared sample videos not present")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    p = str(tmp_path_factory.mktemp("dist") / "marked.mp4")
    make_marked_clip(p, 60)
    return p


@pytest.mark.parametrize("n,kw", [(1, {"segments": 3}), (47, {"segment_frames": 10}), (60, {"segments": 7}),
                                  (100, {"segment_frames": 30}), (31, {"segment_frames": 10})])
def test_plan_tiles_every_frame_once(n, kw):
    segs = plan_segments(n, left=8, right=4, **kw)
    got = [i for s in segs for i in range(s.start, s.end)]
    assert got == list(range(n))
    for s in segs:
        assert s.ctx_start == max(0, s.start - 8) and s.ctx_end == min(n, s.end + 4) and s.frames >= 1
    if "segment_frames" in kw:
        assert all(s.frames >= kw["segment_frames"] / 2 or len(segs) == 1 for s in segs)


def test_plan_refuses_bad_arguments():
    with pytest.raises(VsrInputError, match="not both"):
        plan_segments(10, segments=2, segment_frames=5)
    with pytest.raises(VsrInputError, match="at least 1"):
        plan_segments(10, segments=0)


def test_index_from_packets(clip):
    ix = index_video(clip)
    assert len(ix) == 60
    assert ix.pts == [i * 512 for i in range(60)]
    assert [i for i, k in enumerate(ix.key) if k] == list(range(0, 60, 12))
    assert ix.keyframe_at_or_before(30) == 24 and ix.keyframe_at_or_before(11) == 0
    assert M.job_dir_for("/x/y/out.mp4") == "/x/y/.out.mp4.vsrjob"


@pytest.mark.parametrize("a,b", [(0, 5), (13, 29), (24, 25), (50, 60)])
def test_decode_range_seeks_and_matches_sequential_decode(clip, a, b):
    r = VideoReader(clip)
    ref = [rgb for rgb, _ in r]
    r.close()
    got = list(decode_range(clip, index_video(clip), a, b))
    assert len(got) == b - a
    assert all(np.array_equal(x, y) for x, y in zip(got, ref[a:b]))
    assert read_ids(got) == list(range(a, b))


def _run_local(clip, out, seg_frames=16, ctx=2):
    """The whole pipeline in this process (no Ray): plan, every segment through SegmentWorker, merge."""
    ix = index_video(clip)
    r = VideoReader(clip)
    info = r.info
    r.close()
    src = {"width": info.width, "height": info.height, "fps": str(info.fps), "matrix": info.matrix,
           "color_range": info.color_range, "tags": info.tags, "rotation": 0}
    w = SegmentWorker(UP4_SPEC)
    files, packets = [], []
    for s in plan_segments(len(ix), segment_frames=seg_frames, left=ctx, right=ctx):
        res = w.run({"spec": UP4_SPEC, "path": clip, "index": ix.as_dict(), "segment": s.as_dict(), "src": src, "enc": FAST_ENC,
                     "seg_format": "mp4"})
        assert res["frames"] == s.frames and res["first_pts"] == ix.pts[s.start] and res["last_pts"] == ix.pts[s.end - 1]
        p = os.path.join(os.path.dirname(out), f"seg{s.id}.mp4")
        with open(p, "wb") as f:
            f.write(res["data"])
        files.append(p)
        packets.append(res["packets"])
    return ix, files, packets


def test_segments_merge_to_every_frame_once_with_audio(clip, tmp_path):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path / "out.mp4")
    ix, files, packets = _run_local(clip, out)
    st = merge_segments(files, packets, ix.time_base, clip, out, "mp4", ix.pts, work_dir=str(tmp_path))
    assert st["frames"] == 60 and st["copied_packets"] == len(audio_packets(clip))
    check_output(out, clip, 60)
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_merge_refuses_a_missing_frame_and_writes_nothing(clip, tmp_path):
    out = str(tmp_path / "out.mp4")
    ix, files, packets = _run_local(clip, out)
    with pytest.raises(MergeError, match="segments hold 60 frames, the source has 59"):
        merge_segments(files, packets, ix.time_base, clip, out, "mp4", ix.pts[:59], work_dir=str(tmp_path))
    assert not os.path.exists(out)
    bad = [list(p) for p in packets]
    bad[1] = bad[1][:-1]         # a packet record lost: the counts no longer match
    with pytest.raises(MergeError, match="more packets than recorded"):
        merge_segments(files, bad, ix.time_base, clip, out, "mp4", ix.pts[:59], work_dir=str(tmp_path))
    assert not os.path.exists(out) and not [f for f in os.listdir(tmp_path) if f.startswith("merged")]


def test_manifest_atomic_and_resume_checks(clip, tmp_path):
    d = str(tmp_path)
    fp = M.fingerprint(clip)
    m = {"version": M.VERSION, "output": "o.mp4", "fingerprint": fp, "index_digest": "abc",
         "settings": {"engine": {"model": "basicvsr"}, "encoding": {"crf": 18}}}
    M.save(d, m)
    assert M.load(d) == m and os.listdir(d) == [M.MANIFEST]
    M.check_resume(m, clip, fp, m["settings"], "abc")
    with pytest.raises(M.ResumeError, match=r"settings changed .*encoding.crf 18 -> 20"):
        M.check_resume(m, clip, fp, {"engine": {"model": "basicvsr"}, "encoding": {"crf": 20}}, "abc")
    with pytest.raises(M.ResumeError, match="source .* changed"):
        M.check_resume(m, clip, dict(fp, size=1), m["settings"], "abc")
    with open(os.path.join(d, M.MANIFEST), "w") as f:
        f.write("{truncated")
    with pytest.raises(M.ResumeError, match="unreadable"):
        M.load(d)
    json.dumps(m)


def test_cli_batch_registered_and_one_line_errors(tmp_path, capsys):
    from vsr_engine import cli
    ap = cli.build_parser()
    assert "batch" in ap.format_help()
    assert cli.main(["batch", str(tmp_path / "missing.mp4"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such file or folder" in err[0]
    (tmp_path / "afile").write_text("x")
    assert cli.main(["batch", BBB, "--out", str(tmp_path / "afile")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli.main(["batch", BBB, "--out", str(tmp_path), "--segments", "2", "--segment-frames", "3"]) == 2


def test_cli_batch_creates_out_folder_with_parents(tmp_path, monkeypatch):
    """``--out DIR`` that does not exist yet is created (parents too) before the job starts, as other outputs are."""
    from vsr_engine import cli
    from vsr_engine.distributed import job
    seen = {}

    def fake_run_batch(inputs, out, opts):
        seen["out_is_dir"] = os.path.isdir(out)
        return {"outputs": [], "frames": 0, "seconds": 0.0, "segments": 0, "segments_resumed": 0, "failures": [],
                "merge_seconds": 0.0}

    monkeypatch.setattr(job, "run_batch", fake_run_batch)
    monkeypatch.setattr("vsr_engine.distributed.cli._ray_or_error", lambda: None)
    out = tmp_path / "new" / "nested" / "dir"
    assert cli.main(["batch", BBB, "--out", str(out), "--model", "basicvsr", "-q"]) == 0
    assert seen == {"out_is_dir": True} and out.is_dir()


def _batch_in_process(src, out_dir, opts):
    """``run_batch`` without Ray: the job's own plan, store and merge, every segment through one SegmentWorker."""
    from vsr_engine.distributed import job as J
    os.makedirs(out_dir, exist_ok=True)
    job = J._prepare(src, out_dir, opts)
    os.makedirs(job.job_dir, exist_ok=True)
    w = SegmentWorker()
    for s in job.segs:
        J._store(job, w.run({"spec": opts.spec, "path": os.path.abspath(src), "index": job.manifest["index"],
                             "segment": s.as_dict(), "src": job.src, "enc": opts.enc,
                             "seg_format": "mp4" if job.fmt == "mp4" else "matroska"}))
    return job, J._merge(job)


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_vfr_ac3_segments_copy_exactly_the_packets_a_single_run_copies(tmp_path, ext):
    """Issue 22: a VFR Matroska clip with AC3 audio (Big Buck Bunny's frames and audio; 32 ms AC3 packets, the
    first primed to -5 ms) in 3 segments: packets straddle both segment borders, and the output holds exactly
    the audio packets (bytes and times) a single `Engine.run` copies, each once, at the same frame PTS."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
    import batch_compare as B
    from distributed_helpers import make_vfr_ac3_clip
    from vsr_engine.distributed import BatchOptions
    from vsr_engine.distributed.worker import build_engine
    src = str(tmp_path / "vfr_ac3.mkv")
    pts = make_vfr_ac3_clip(src, frames=30)
    opts = BatchOptions(spec=UP4_SPEC, enc=FAST_ENC, segments=3, ext=ext, quiet=True)
    job, st = _batch_in_process(src, str(tmp_path / "out"), opts)
    borders = [pts[s.start] for s in job.segs[1:]]
    audio = B.other_packets(src)["#0 audio ac3"]
    assert audio[0][0] < 0 and len(borders) == 2
    for b in borders:    # an audio packet starts before each border and ends after it
        assert any(t * 1000 < b < t * 1000 + 32 for t, _ in audio), b
    assert st["copy_counts"] == {1: {"read": len(audio), "written": len(audio), "dropped": 0}}
    single = str(tmp_path / ("single" + ext))
    build_engine(UP4_SPEC).run(src, single, **FAST_ENC)
    assert B.compare(single, job.output) == []
    assert B.other_packets(job.output) == B.other_packets(single)
    assert [p for _, p in B.other_packets(job.output)["#0 audio ac3"]] == [p for _, p in audio]
    assert video_pts(job.output)[1] == video_pts(single)[1]
