"""The driver: plan every input, run the segments on a pool of Ray actors, retry what fails, merge, report.

    run_batch(["a.mp4", "folder/"], "out/", BatchOptions(spec={"model": "basicvsr"}, segment_frames=300))

Each actor (:class:`~vsr_engine.distributed.worker.SegmentWorker`) loads the model once and serves segments;
it asks for one GPU when the cluster has GPUs. A segment whose worker process dies, whose node is lost, or which
raises, goes back to the queue (a lost actor is replaced) until it has failed ``retries + 1`` times; then the job
stops with one message naming it, and the finished segments stay on disk for ``--resume``. A worker that hangs
(alive, but its frame counter has not moved for ``segment_timeout`` seconds; default from the measured time per
frame, see :func:`_stall_limit`) is killed, which cancels its task, and replaced; its segment is retried like a
failed one, and the result of the hung task can never be stored (exactly-once frames). Segment bytes come
back through Ray's object store, so the nodes need no shared file system; the driver writes them.
"""
from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import time
from typing import Callable, Dict, List, Optional

from ..video import VIDEO_EXTS, VideoReader, VsrError, VsrInputError, VsrOutputError
from . import manifest as M
from .index import index_video
from .merge import merge_segments
from .plan import plan_segments
from .progress import JobProgress

__all__ = ["BatchOptions", "JobError", "run_batch", "expand_inputs", "shutdown_workers"]

# actors kept between jobs (BatchOptions.keep_workers): {(num_gpus, num_cpus): [(actor, info), ...]}
_KEPT: Dict[tuple, list] = {}


def shutdown_workers() -> None:
    """Stop the actors that jobs run with ``keep_workers`` left running."""
    import ray
    for actors in _KEPT.values():
        for a, _ in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
    _KEPT.clear()


class JobError(VsrError):
    """The job stopped (a segment kept failing, no worker could start, ...): one line saying which and why."""


@dataclasses.dataclass
class BatchOptions:
    spec: dict = dataclasses.field(default_factory=lambda: {"model": "basicvsr"})  # worker.build_engine spec
    enc: dict = dataclasses.field(default_factory=lambda: {"codec": "libx264", "crf": 18, "preset": "medium",
                                                           "pix_fmt": None})   # None: the input's bit depth
    segments: Optional[int] = None          # split every video into this many segments ...
    segment_frames: Optional[int] = None    # ... or into segments of this many frames (default 300)
    context: Optional[int] = None           # context frames on each side (default: twice the engine's overlap)
    workers: Optional[int] = None           # actors (default: one per GPU, else 1)
    retries: int = 3                        # extra attempts per segment
    address: Optional[str] = None           # Ray cluster address; None: a local Ray instance
    ray_init: dict = dataclasses.field(default_factory=dict)  # extra ray.init arguments (local instance)
    num_gpus: Optional[float] = None        # per actor (default: 1 when the cluster has GPUs, else 0)
    num_cpus: float = 1
    resume: bool = False
    force: bool = False
    ext: str = ".mp4"
    quiet: bool = False
    start_timeout: float = 600.0            # seconds without any live worker before giving up
    segment_timeout: Optional[float] = None  # seconds without progress before a segment counts as hung (None:
    #                                          from the measured time per frame, see _stall_limit)
    heartbeat: float = 1.0                  # seconds between progress polls of a busy worker
    keep_workers: bool = False              # leave the actors running for the next job (shutdown_workers())
    faults: Optional[dict] = None           # tests: see SegmentWorker
    on_dispatch: Optional[Callable] = None  # tests: called (worker_info, job, segment, attempt) on each dispatch
    on_segment: Optional[Callable] = None   # tests: called (job, segment) after a segment is stored


@dataclasses.dataclass
class _Job:
    source: str
    output: str
    job_dir: str
    fmt: str
    manifest: dict
    src: dict
    segs: list
    done: set = dataclasses.field(default_factory=set)
    merged: bool = False


def expand_inputs(inputs: List[str]) -> List[str]:
    """Files as given; folders give their videos (sorted)."""
    out = []
    for p in inputs:
        if os.path.isdir(p):
            vids = sorted(os.path.join(p, f) for f in os.listdir(p)
                          if f.lower().endswith(VIDEO_EXTS) and os.path.isfile(os.path.join(p, f)))
            if not vids:
                raise VsrInputError(f"{p}: no videos ({', '.join(VIDEO_EXTS)}) in this folder")
            out += vids
        elif os.path.isfile(p):
            out.append(p)
        else:
            raise VsrInputError(f"{p}: no such file or folder")
    if not out:
        raise VsrInputError("no inputs")
    return out


def _settings(opts: BatchOptions, context: int, plan_args: dict) -> dict:
    spec = {k: v for k, v in opts.spec.items() if k not in ("device", "threads")}
    if spec.get("weights") not in (None, False):
        spec["weights"] = os.path.abspath(os.fspath(spec["weights"]))
    return {"engine": spec, "encoding": dict(opts.enc), "context": context, "plan": plan_args}


def _prepare(path: str, out_dir: str, opts: BatchOptions) -> _Job:
    from ..video import check_stream_copy, check_video_options
    name = os.path.splitext(os.path.basename(path))[0] + opts.ext
    output = os.path.join(out_dir, name)
    if os.path.abspath(output) == os.path.abspath(path):
        raise VsrOutputError(f"{output}: the output would replace its input")
    fmt = check_video_options(output, opts.enc.get("codec", "libx264"), opts.enc.get("pix_fmt"))
    check_stream_copy(path, fmt)
    r = VideoReader(path)
    info = r.info
    r.close()
    index = index_video(path, fps=info.fps)
    # default: twice the overlap. With the overlap alone (8) segments of 10 frames of Vid4 walk lose 0.043 dB
    # against one process, with 16 they are within 0.004 dB (bench/results/distributed_seam_ctx*.json): the
    # forward branch must warm up on the left, and the backward branch needs more lookahead than inside one run.
    context = opts.context if opts.context is not None else 2 * int(opts.spec.get("overlap", 8))
    plan_args = {"segments": opts.segments, "segment_frames": opts.segment_frames}
    cuts = None
    if opts.spec.get("scene_cuts") is not None:   # borders at scene cuts (found on a small decode of the LR frames)
        from ..scenecut import detect_in_video
        cuts = detect_in_video(path, opts.spec["scene_cuts"])
    segs = plan_segments(len(index), left=context, right=context, cuts=cuts, **plan_args)
    settings = _settings(opts, context, plan_args)
    fp = M.fingerprint(path)
    job_dir = M.job_dir_for(output)
    src = {"width": info.width, "height": info.height, "fps": str(info.fps) if info.fps else None,
           "matrix": info.matrix, "color_range": info.color_range, "matrix_guessed": info.matrix_guessed,
           "tags": dict(info.tags or {}), "rotation": info.rotation,
           "sar": f"{info.sar.numerator}/{info.sar.denominator}" if info.sar else None}
    old = None
    if opts.force:
        import shutil
        shutil.rmtree(job_dir, ignore_errors=True)
    else:
        old = M.load(job_dir)
        if old is not None and not opts.resume:
            raise VsrOutputError(f"{output}: an unfinished job is in {job_dir}; pass --resume to continue it or --force "
                                 "to start over")
        if os.path.exists(output) and not opts.resume:
            raise VsrOutputError(f"{output} exists; pass --force to replace it")
    if old is not None:
        M.check_resume(old, path, fp, settings, index.digest())
        man = old
    else:
        man = {"version": M.VERSION, "source": os.path.abspath(path), "output": os.path.abspath(output),
               "fingerprint": fp, "settings": settings, "index_digest": index.digest(), "index": index.as_dict(),
               "src": src, "format": fmt,
               "segments": [dict(s.as_dict(), state="pending", attempts=0) for s in segs]}
    job = _Job(path, output, job_dir, fmt, man, src, segs)
    for rec in man["segments"]:
        if rec["state"] == "done" and _segment_ok(job_dir, rec):
            job.done.add(rec["id"])
        else:
            rec["state"] = "pending"
    return job


def _segment_ok(job_dir: str, rec: dict) -> bool:
    p = os.path.join(job_dir, rec.get("file") or "")
    if not rec.get("file") or not os.path.isfile(p):
        return False
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest() == rec.get("sha256")


def _store(job: _Job, res: dict) -> None:
    """Write a returned segment durably under its final name, then record it in the manifest."""
    data = res["data"]
    if hashlib.sha256(data).hexdigest() != res["sha256"]:
        raise JobError(f"segment {res['segment']} of {job.source} arrived damaged")
    rec = job.manifest["segments"][res["segment"]]
    ext = ".mp4" if job.fmt in ("mp4", "mov", "3gp", "ipod", "ismv") else ".mkv"
    name = f"seg_{res['segment']:05d}{ext}"
    M.atomic_write(os.path.join(job.job_dir, name), data)
    rec.update(state="done", file=name, sha256=res["sha256"], packets=res["packets"], first_pts=res["first_pts"],
               last_pts=res["last_pts"], frames=res["frames"], seconds=res["seconds"])
    M.save(job.job_dir, job.manifest)
    job.done.add(res["segment"])


def _merge(job: _Job) -> dict:
    from .index import FrameIndex
    idx = FrameIndex.from_dict(job.manifest["index"])
    recs = job.manifest["segments"]
    st = merge_segments([os.path.join(job.job_dir, r["file"]) for r in recs], [r["packets"] for r in recs],
                        idx.time_base, job.source, job.output, job.fmt, idx.pts, rotation=job.src.get("rotation", 0),
                        work_dir=job.job_dir, fps=job.src.get("fps"), sar=job.src.get("sar"))
    import shutil
    shutil.rmtree(job.job_dir, ignore_errors=True)
    job.merged = True
    return st


def _ray_errors():
    import ray.exceptions as E
    lost = tuple(getattr(E, n) for n in ("RayActorError", "ActorDiedError", "ActorUnavailableError",
                                         "WorkerCrashedError", "NodeDiedError", "ObjectLostError",
                                         "OwnerDiedError", "LocalRayletDiedError") if hasattr(E, n))
    return lost, E.RayError


def run_batch(inputs: List[str], out_dir: str, opts: Optional[BatchOptions] = None) -> dict:
    """Upscale every input into ``out_dir``; returns a summary dict (frames, seconds, failures, merge times)."""
    opts = opts or BatchOptions()
    t_start = time.perf_counter()
    if opts.force and opts.resume:
        raise VsrOutputError("--force starts over and --resume continues; pass only one")
    if not os.path.isdir(out_dir):
        raise VsrOutputError(f"{out_dir}: no such folder (create it first)")
    paths = expand_inputs(inputs)
    outs = collections.Counter(os.path.splitext(os.path.basename(p))[0] for p in paths)
    dup = [k for k, v in outs.items() if v > 1]
    if dup:
        raise VsrInputError(f"several inputs would write {dup[0]}{opts.ext}; give them different names")
    jobs = []
    todo = []
    for p in paths:
        if opts.resume and os.path.exists(os.path.join(out_dir, os.path.splitext(os.path.basename(p))[0] + opts.ext)) \
                and M.load(M.job_dir_for(os.path.join(out_dir, os.path.splitext(os.path.basename(p))[0]
                                                      + opts.ext))) is None:
            continue    # finished by an earlier run
        jobs.append(_prepare(p, out_dir, opts))
    t_plan = time.perf_counter() - t_start
    for j in jobs:
        os.makedirs(j.job_dir, exist_ok=True)
        M.save(j.job_dir, j.manifest)
        todo += [(j, s) for s in j.segs if s.id not in j.done]
    summary = {"inputs": len(paths), "outputs": [], "frames": sum(len(j.manifest["index"]["pts"]) for j in jobs),
               "segments": sum(len(j.segs) for j in jobs), "segments_resumed": sum(len(j.done) for j in jobs),
               "failures": [], "plan_seconds": t_plan, "merge_seconds": 0.0, "ray_start_seconds": 0.0,
               "segment_seconds": 0.0}
    prog = JobProgress(total=summary["frames"], quiet=opts.quiet,
                       done=sum(j.segs[i].frames for j in jobs for i in j.done))
    try:
        if todo:
            _run_pool(jobs, todo, opts, summary, prog)
        for j in jobs:
            if not j.merged and len(j.done) == len(j.segs):
                summary["merge_seconds"] += _merge(j)["seconds"]
                summary["outputs"].append(j.output)
                prog.note(f"wrote {j.output}")
    finally:
        prog.end()
    summary["seconds"] = time.perf_counter() - t_start
    return summary


# before any segment has been timed: this long without progress is a hang (model warm-up, a first window of 4K)
_FIRST_STALL_S = 600.0
_MIN_STALL_S = 60.0


def _stall_limit(opts: BatchOptions, per_frame: Optional[float], seg) -> float:
    """Seconds without progress after which a segment counts as hung: ``segment_timeout`` when given, else ten
    times the measured time per frame over the longest stretch without a tick (the first window: the context
    plus a window plus its overlap are decoded before the first output), at least a minute; before any segment
    has been timed, ten minutes."""
    if opts.segment_timeout is not None:
        return float(opts.segment_timeout)
    if not per_frame:
        return _FIRST_STALL_S
    span = (seg.start - seg.ctx_start) + int(opts.spec.get("window", 32)) + int(opts.spec.get("overlap", 8))
    return max(_MIN_STALL_S, 10.0 * per_frame * span)


def _run_pool(jobs, todo, opts: BatchOptions, summary: dict, prog: JobProgress) -> None:
    import ray
    from .worker import SegmentWorker
    lost_errors, ray_error = _ray_errors()
    t0 = time.perf_counter()
    own = False
    if not ray.is_initialized():
        kw = dict(log_to_driver=False, logging_level="WARNING")
        if opts.address:   # an existing cluster: resources and dashboard are its own
            ray.init(address=opts.address, **{**kw, **opts.ray_init})
        else:
            ray.init(**{**kw, "include_dashboard": False, **opts.ray_init})
        own = True
    summary["ray_start_seconds"] = time.perf_counter() - t0
    t_pool = time.perf_counter()
    res = ray.cluster_resources()
    gpus = opts.num_gpus if opts.num_gpus is not None else (1 if res.get("GPU", 0) >= 1 else 0)
    k = opts.workers or (int(res.get("GPU", 0)) if gpus else 1) or 1
    # two calls at once: run() and the progress() heartbeat
    actor_cls = ray.remote(num_gpus=gpus, num_cpus=opts.num_cpus, max_restarts=0, max_concurrency=2)(SegmentWorker)
    queue = collections.deque(todo)
    attempts: Dict[tuple, int] = {}
    idle, starting, busy = [], {}, {}      # idle: [(actor, info)]; starting: ref -> actor; busy: ref -> (...)
    start_failures: List[str] = []
    replaced = 0
    beat: Dict[object, list] = {}           # busy ref -> [frames seen, when they last moved, poll ref or None, polled]
    per_frame: List[float] = []             # measured seconds per decoded frame of finished segments

    def start_actor():
        a = actor_cls.remote(opts.spec)
        starting[a.ready.remote()] = a

    pool_key = (gpus, opts.num_cpus)
    kept = _KEPT.pop(pool_key, []) if not own else []
    idle += kept[:k]
    for a, _ in kept[k:]:
        ray.kill(a, no_restart=True)
    for _ in range(k - len(idle)):
        start_actor()
    last_alive = time.perf_counter()
    try:
        while queue or busy:
            while queue and idle:
                actor, info = idle.pop()
                job, seg = queue.popleft()
                key = (job.output, seg.id)
                attempts[key] = attempts.get(key, 0) + 1
                task = {"spec": opts.spec, "faults": opts.faults, "path": os.path.abspath(job.source), "index": job.manifest["index"], "segment": seg.as_dict(), "src": job.src,
                        "enc": opts.enc, "seg_format": "mp4" if job.fmt in ("mp4", "mov", "3gp", "ipod", "ismv")
                        else "matroska", "attempt": attempts[key]}
                ref = actor.run.remote(task)
                busy[ref] = (actor, info, job, seg)
                beat[ref] = [-1, time.perf_counter(), None, 0.0]
                if opts.on_dispatch is not None:
                    opts.on_dispatch(info, job, seg, attempts[key])
            refs = list(starting) + list(busy)
            if not refs:
                raise JobError("no worker is left to run the remaining segments")
            ready, _ = ray.wait(refs, num_returns=1, timeout=min(1.0, opts.heartbeat))
            prog.show(workers=len(idle) + len(busy), failures=len(summary["failures"]))
            hung = _check_heartbeats(busy, beat, opts, max(per_frame) if per_frame else None, ready)
            for ref in hung:
                actor, info, job, seg = busy.pop(ref)
                b = beat.pop(ref)
                key = (job.output, seg.id)
                limit = _stall_limit(opts, max(per_frame) if per_frame else None, seg)
                msg = f"no progress for {time.perf_counter() - b[1]:.0f} s (limit {limit:.0f} s)"
                summary["failures"].append({"output": job.output, "segment": seg.id, "attempt": attempts[key],
                                            "kind": "hung", "message": msg})
                prog.note(f"segment {seg.id} [{seg.start}, {seg.end}) of {os.path.basename(job.source)}: worker "
                          f"hung (attempt {attempts[key]}): {msg}; killed, retrying")
                try:        # killing the actor cancels its task: the hung attempt can never deliver a result
                    ray.cancel(ref)
                except Exception:
                    pass
                try:
                    ray.kill(actor, no_restart=True)
                except Exception:
                    pass
                replaced += 1
                start_actor()
                if attempts[key] > opts.retries:
                    n_done = sum(len(j.done) for j in jobs)
                    raise JobError(f"segment {seg.id} (frames [{seg.start}, {seg.end})) of {job.source} hung on "
                                   f"every one of its {attempts[key]} attempts (no progress for {limit:.0f} s; "
                                   f"--segment-timeout sets the limit); {n_done} finished segments are kept -- "
                                   "rerun with --resume") from None
                queue.appendleft((job, seg))
            if hung:
                continue
            if not ready:
                if busy or idle:
                    last_alive = time.perf_counter()
                elif time.perf_counter() - last_alive > opts.start_timeout:
                    raise JobError(f"no worker started within {opts.start_timeout:.0f} s (cluster resources: "
                                   f"{_fmt_res(ray.cluster_resources())}; each worker needs {gpus} GPU, "
                                   f"{opts.num_cpus} CPU)")
                continue
            ref = ready[0]
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    info = ray.get(ref, timeout=60)
                    idle.append((actor, info))
                    summary.setdefault("first_worker_seconds", time.perf_counter() - t_pool)
                    last_alive = time.perf_counter()
                except ray_error as e:
                    start_failures.append(_one_line(e))
                    if not idle and not busy and not starting and len(start_failures) >= k:
                        raise JobError(f"workers could not start: {start_failures[-1]}") from None
                    if len(start_failures) < 3 * k:
                        start_actor()
                continue
            actor, info, job, seg = busy.pop(ref)
            beat.pop(ref, None)
            key = (job.output, seg.id)
            try:
                out = ray.get(ref, timeout=120)
            except ray_error as e:
                lost = isinstance(e, lost_errors)
                what = "worker lost" if lost else "error"
                msg = _one_line(e)
                summary["failures"].append({"output": job.output, "segment": seg.id, "attempt": attempts[key],
                                            "kind": what, "message": msg[:300]})
                prog.note(f"segment {seg.id} [{seg.start}, {seg.end}) of {os.path.basename(job.source)}: {what} "
                          f"(attempt {attempts[key]}): {msg[:160]}")
                if lost:
                    try:
                        ray.kill(actor, no_restart=True)
                    except Exception:
                        pass
                    replaced += 1
                    start_actor()
                else:
                    idle.append((actor, info))
                if attempts[key] > opts.retries:
                    n_done = sum(len(j.done) for j in jobs)
                    raise JobError(f"segment {seg.id} (frames [{seg.start}, {seg.end})) of {job.source} failed "
                                   f"{attempts[key]} times, last: {msg[:200]}; {n_done} finished segments are kept "
                                   f"-- rerun with --resume") from None
                queue.appendleft((job, seg))
                continue
            idle.append((actor, info))
            _store(job, out)
            per_frame.append(out["seconds"] / max(1, seg.ctx_end - seg.ctx_start))
            summary["segment_seconds"] += out["seconds"]
            prog.add(seg.frames)
            if opts.on_segment is not None:
                opts.on_segment(job, seg)
            if len(job.done) == len(job.segs):
                t = time.perf_counter()
                summary["merge_seconds"] += _merge(job)["seconds"]
                summary["outputs"].append(job.output)
                prog.note(f"wrote {job.output} ({time.perf_counter() - t:.2f} s merge)")
    finally:
        summary["workers_replaced"] = replaced
        if opts.keep_workers and not own:
            # busy ones too: their running task finishes (its result is dropped) before the next job's
            _KEPT[pool_key] = list(idle) + [(v[0], v[1]) for v in busy.values()]
            idle, busy = [], {}
        for a in [a for a, _ in idle] + list(starting.values()) + [v[0] for v in busy.values()]:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        if own:
            ray.shutdown()


def _check_heartbeats(busy: dict, beat: dict, opts: BatchOptions, per_frame: Optional[float], ready) -> list:
    """Poll each busy worker's progress (at most one poll in flight each) and return the refs of the segments
    whose frame counter has not moved within their stall limit. A segment whose result is ready is not hung."""
    import ray
    now = time.perf_counter()
    polls = {b[2]: r for r, b in beat.items() if b[2] is not None}
    if polls:
        done, _ = ray.wait(list(polls), num_returns=len(polls), timeout=0)
        for p in done:
            b = beat.get(polls[p])
            if b is None:
                continue
            b[2] = None
            try:
                st = ray.get(p, timeout=1)
            except Exception:
                continue            # the worker died: its run() reports that
            if st.get("frames", 0) != b[0]:
                b[0], b[1] = st.get("frames", 0), now
    hung = []
    for r, b in beat.items():
        if r not in busy or r in ready:
            continue
        if b[2] is None and now - b[3] >= opts.heartbeat:
            b[2], b[3] = busy[r][0].progress.remote(), now
        if now - b[1] > _stall_limit(opts, per_frame, busy[r][3]):
            hung.append(r)
    return hung


def _fmt_res(r: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in sorted(r.items()) if k in ("CPU", "GPU", "memory") or k.startswith("GPU"))


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    # Ray prefixes the remote traceback; the last line holds the exception itself
    line = next((ln for ln in reversed(s) if ln.strip()), type(e).__name__) if s else type(e).__name__
    return " ".join(line.split())
