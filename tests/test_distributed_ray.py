"""vsr_engine.distributed on a real two-node Ray cluster in this machine (loopback only, logical GPUs, CPU).

One cluster for the module: a head and a worker node, each with 2 CPUs and 1 logical GPU, 100 MB object store.
Faults are real: a worker process killed with SIGKILL, the worker node removed, an exception raised in a segment,
the driver stopped; every output must still hold every frame exactly once (frame numbers drawn into the frames
are read back), at the source's PTS, with all the source's audio packets.
"""
import os
import signal
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
# loopback only: ray resolves "127.0.0.1" to the machine's address unless cluster mode is off (read at import)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ray = pytest.importorskip("ray")

from distributed_helpers import (BBB, FAST_ENC, TINY_SPEC, UP4_SPEC, audio_packets, check_output,  # noqa: E402
                                 decoded, make_marked_clip, video_pts)

from vsr_engine.distributed import BatchOptions, JobError, ResumeError, run_batch, shutdown_workers  # noqa: E402
from vsr_engine.video import VsrOutputError  # noqa: E402
from vsr_engine.distributed import manifest as M  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists(BBB), reason="shared sample videos not present")
MB = 2 ** 20


@pytest.fixture(scope="module")
def cluster():
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster
    old_pp = os.environ.get("PYTHONPATH")
    old_flag = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    # workers import the test helpers (the tiny model factory) and this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([HERE, ROOT] + ([old_pp] if old_pp else []))
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=2, num_gpus=1, include_dashboard=False, object_store_memory=100 * MB,
            node_ip_address="127.0.0.1",
            _system_config={"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                            "health_check_failure_threshold": 4}))
        node = c.add_node(num_cpus=2, num_gpus=1, object_store_memory=100 * MB, node_ip_address="127.0.0.1")
        ray.init(address=c.address, _node_ip_address="127.0.0.1", logging_level="WARNING", log_to_driver=False)
        c.wait_for_nodes(timeout=120)
        yield c, node
    finally:
        if ray.is_initialized():
            shutdown_workers()
        ray.shutdown()
        if c is not None:
            c.shutdown()
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_pp is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_pp


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("clips")
    (d / "in").mkdir()
    long_, short = str(d / "in" / "long.mp4"), str(d / "in" / "short.mp4")
    make_marked_clip(long_, 72)
    make_marked_clip(short, 20, gop=10)
    return {"dir": str(d / "in"), "long": long_, "short": short}


def _opts(**kw):
    # keep_workers: the actors (a Python process each, torch imported, model loaded) serve every test
    base = dict(spec=UP4_SPEC, enc=FAST_ENC, segment_frames=12, workers=2, retries=2, quiet=True, start_timeout=240,
                keep_workers=True)
    base.update(kw)
    return BatchOptions(**base)


def test_matches_single_process_run(cluster, clips, tmp_path):
    """Tiny random-init BasicVSR (split mode, the real code path), 3 segments on 2 nodes vs one Engine.run."""
    from vsr_engine.distributed.worker import build_engine
    src = clips["short"]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    s = run_batch([src], str(out_dir), _opts(spec=TINY_SPEC, segments=3, segment_frames=None))
    out = str(out_dir / "short.mp4")
    assert s["outputs"] == [out] and s["failures"] == [] and s["segments"] == 3
    assert not os.path.exists(M.job_dir_for(out))
    single = str(tmp_path / "single.mp4")
    build_engine(TINY_SPEC).run(src, single, **FAST_ENC)
    n1, p1, _ = decoded(single)
    n2, p2, _ = decoded(out)
    assert n1 == n2 == 20 and p1 == p2
    assert video_pts(single) == video_pts(out)
    assert audio_packets(single) == audio_packets(out) and audio_packets(out)


def test_folder_and_killed_worker(cluster, clips, tmp_path):
    """Two inputs (a folder); the first worker process to get a segment is SIGKILLed in the middle of it."""
    killed = []

    def on_dispatch(info, job, seg, attempt):
        if not killed:
            killed.append((info["pid"], seg.id))
            threading.Timer(0.4, os.kill, (info["pid"], signal.SIGKILL)).start()

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    s = run_batch([clips["dir"]], str(out_dir), _opts(faults={"sleep": 0.1}, on_dispatch=on_dispatch))
    assert killed and sorted(os.listdir(out_dir)) == ["long.mp4", "short.mp4"]
    lost = [f for f in s["failures"] if f["kind"] == "worker lost"]
    assert lost and lost[0]["segment"] == killed[0][1] and s["workers_replaced"] >= 1
    check_output(str(out_dir / "long.mp4"), clips["long"], 72)
    check_output(str(out_dir / "short.mp4"), clips["short"], 20)


def test_injected_exception_is_retried(cluster, clips, tmp_path):
    s = run_batch([clips["long"]], str(tmp_path), _opts(faults={"raise": {2: 2}}))
    errs = [f for f in s["failures"] if f["kind"] == "error"]
    assert [f["segment"] for f in errs] == [2, 2] and "injected fault in segment 2" in errs[0]["message"]
    check_output(str(tmp_path / "long.mp4"), clips["long"], 72)


def test_failing_segment_stops_job_then_resume(cluster, clips, tmp_path):
    """A segment that keeps failing ends the job with one message naming it; nothing at the output path; the
    finished segments are reused by --resume."""
    out = str(tmp_path / "long.mp4")
    with pytest.raises(JobError, match=r"segment 3 \(frames \[36, 48\)\) of .*long.mp4 failed 2 times.*--resume"):
        run_batch([clips["long"]], str(tmp_path), _opts(retries=1, faults={"raise": {3: 99}}))
    assert not os.path.exists(out)
    man = M.load(M.job_dir_for(out))
    done = [r["id"] for r in man["segments"] if r["state"] == "done"]
    assert 3 not in done and len(done) >= 1
    with pytest.raises(VsrOutputError, match="unfinished job"):
        run_batch([clips["long"]], str(tmp_path), _opts())
    s = run_batch([clips["long"]], str(tmp_path), _opts(resume=True))
    assert s["segments_resumed"] == len(done)
    check_output(out, clips["long"], 72)


def _bounded(inputs, out_dir, opts, limit=180.0):
    """run_batch in a thread, bounded: past ``limit`` seconds (the hang was not detected) every worker process it
    dispatched to is killed until the job ends, and the test fails instead of hanging."""
    import time
    pids, res = set(), {}
    opts.on_dispatch = lambda info, job, seg, attempt: pids.add(info["pid"])

    def go():
        try:
            res["v"] = run_batch(inputs, out_dir, opts)
        except BaseException as e:  # re-raised below
            res["e"] = e

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(limit)
    if t.is_alive():
        end = time.time() + 120
        while t.is_alive() and time.time() < end:
            for pid in list(pids):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            t.join(2)
        pytest.fail(f"run_batch still running after {limit:.0f} s: the hung worker was not detected")
    if "e" in res:
        raise res["e"]
    return res["v"]


def test_hung_worker_is_killed_and_its_segment_retried(cluster, clips, tmp_path):
    """A worker that sleeps forever in the middle of segment 1 (alive, no progress): after segment_timeout
    seconds without progress its actor is killed (cancelling the task), a new one is started, and the segment
    runs again; every frame exactly once, at the source's PTS, with the source's audio."""
    s = _bounded([clips["long"]], str(tmp_path), _opts(faults={"hang": {1: 1}}, segment_timeout=8))
    hung = [f for f in s["failures"] if f["kind"] == "hung"]
    assert [(f["segment"], f["attempt"]) for f in hung] == [(1, 1)], s["failures"]
    assert "no progress for" in hung[0]["message"] and s["workers_replaced"] >= 1
    check_output(str(tmp_path / "long.mp4"), clips["long"], 72)


def test_segment_hanging_on_every_try_fails_the_job(cluster, clips, tmp_path):
    out = str(tmp_path / "long.mp4")
    with pytest.raises(JobError, match=r"segment 2 \(frames \[24, 36\)\) of .*long.mp4 hung on every one of its 2 "
                                       r"attempts \(no progress for 6 s; --segment-timeout"):
        _bounded([clips["long"]], str(tmp_path), _opts(retries=1, faults={"hang": {2: 99}}, segment_timeout=6))
    assert not os.path.exists(out)


def test_stall_limit_default_comes_from_the_measured_time_per_frame():
    from vsr_engine.distributed.job import _stall_limit
    from vsr_engine.distributed.plan import Segment
    seg = Segment(id=1, start=12, end=24, ctx_start=4, ctx_end=32)
    opts = BatchOptions(spec={"window": 32, "overlap": 8})
    assert _stall_limit(opts, None, seg) == 600.0                            # nothing timed yet
    assert _stall_limit(opts, 0.5, seg) == 10 * 0.5 * (8 + 32 + 8)          # 240 s
    assert _stall_limit(opts, 0.01, seg) == 60.0                            # at least a minute
    assert _stall_limit(BatchOptions(segment_timeout=5), 0.5, seg) == 5.0


def test_driver_stopped_then_resume(cluster, clips, tmp_path):
    stored = []

    def stop_after_two(job, seg):
        stored.append(seg.id)
        if len(stored) == 2:
            raise KeyboardInterrupt

    out = str(tmp_path / "long.mp4")
    with pytest.raises(KeyboardInterrupt):
        run_batch([clips["long"]], str(tmp_path), _opts(on_segment=stop_after_two))
    assert not os.path.exists(out)
    with pytest.raises(ResumeError, match=r"settings changed .*crf 23 -> 30"):
        run_batch([clips["long"]], str(tmp_path), _opts(resume=True, enc=dict(FAST_ENC, crf=30)))
    s = run_batch([clips["long"]], str(tmp_path), _opts(resume=True))
    assert s["segments_resumed"] == 2 and s["segments"] == 6
    check_output(out, clips["long"], 72)


def test_cli_batch_on_the_cluster_address(cluster, clips, tmp_path):
    """`vsr-engine batch ... --address` from another driver process, with a registered model (DSCVSR x2)."""
    import subprocess
    c, _ = cluster
    cmd = [sys.executable, "-m", "vsr_engine.cli", "batch", clips["short"], "--out", str(tmp_path), "--address",
           c.address, "--model", "dscvsr", "--scale", "2", "--window", "8", "--overlap", "2", "--segments", "2",
           "--workers", "1", "--gpus-per-worker", "0", "--preset", "ultrafast", "--threads", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "wrote 1 output(s), 20 frames" in r.stdout and "2 segments" in r.stdout
    out = str(tmp_path / "short.mp4")
    check_output(out, clips["short"], 20, ids=False)
    assert decoded(out)[2][0].shape == (72, 128, 3)   # 64x36 x2


def test_node_removed(cluster, clips, tmp_path):
    """The worker node disappears while its actor runs a segment (runs last: the cluster keeps one node)."""
    c, node = cluster
    removed = []

    def on_dispatch(info, job, seg, attempt):
        if not removed and info.get("node") == node.node_id:
            removed.append(seg.id)
            threading.Timer(0.4, c.remove_node, (node,)).start()

    s = run_batch([clips["long"]], str(tmp_path), _opts(faults={"sleep": 0.1}, on_dispatch=on_dispatch))
    assert removed
    assert any(f["kind"] == "worker lost" and f["segment"] == removed[0] for f in s["failures"])
    check_output(str(tmp_path / "long.mp4"), clips["long"], 72)


def test_corpus_subset_batch_equals_single_process(cluster, tmp_path):
    """Issue 22: the representative corpus subset (SAR, HDR10 10-bit, VFR, rotation, 2 audio + 2 subtitle streams,
    edit list) plus a VFR Matroska clip with AC3 audio, each in 3 segments on the 2 nodes, against
    `vsr-engine upscale` with the same model and encoder settings: frames, PTS, declared rate, tags, bit depth,
    SAR, rotation, HDR10 side data, streams and every audio/subtitle packet identical."""
    sys.path.insert(0, os.path.join(HERE, "corpus"))
    import batch_compare as B
    import check_corpus as C
    from distributed_helpers import make_vfr_ac3_clip
    files = B.build(str(tmp_path / "in"))
    ac3 = str(tmp_path / "in" / "vfr_ac3.mkv")
    make_vfr_ac3_clip(ac3, frames=12)
    files.append(ac3)
    weights = C.tiny_weights(str(tmp_path))
    spec = {"model": "basicvsr", "weights": weights, "window": 4, "overlap": 2, "threads": 1}
    enc = {"codec": "libx264", "crf": 18, "preset": "ultrafast", "pix_fmt": None}
    ext_of = dict(B.SUBSET, **{"vfr_ac3.mkv": ".mkv"})
    rows = []
    for ext in (".mkv", ".mp4"):
        ins = [f for f in files if ext_of[os.path.basename(f)] == ext]
        out_dir = tmp_path / ("out" + ext)
        out_dir.mkdir()
        s = run_batch(ins, str(out_dir), _opts(spec=spec, enc=enc, segments=3, segment_frames=None, ext=ext))
        assert s["failures"] == [] and len(s["outputs"]) == len(ins) and s["segments"] == 3 * len(ins)
        for f in ins:
            name = os.path.basename(f)
            single = str(tmp_path / ("single_" + name.replace(".", "_") + ext))
            rc, _, err = C.run_cli(["upscale", f, single, "--model", "basicvsr", "--weights", weights, "--window", "4",
                                    "--overlap", "2", "--preset", "ultrafast", "-q"])
            assert rc == 0, err
            batch = str(out_dir / (os.path.splitext(name)[0] + ext))
            rows.append((name, B.compare(single, batch)))
    assert len(rows) == 8
    assert all(not bad for _, bad in rows), rows
