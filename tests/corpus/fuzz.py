"""Seeded fuzzing of ``vsr-engine upscale``: real derived files (H.264+AAC MP4, Matroska, MPEG-TS, AVI) with random
bytes zeroed, flipped or cut. Every mutant runs in a worker process with a time limit; the rules checked are: no
hang, exit status 0 / 2 / 3, no traceback or "internal error" without --debug, one error line on failure, no
file at OUTPUT (nor a partial folder) unless the run succeeded and the output decodes completely, and no silent
loss (exit 0 with fewer frames than the unmutated file holds).

    python3 tests/corpus/fuzz.py [N] [SEED]                 # the CI seeds (4 files); prints the outcome table
    python3 tests/corpus/fuzz.py --mutants N [--seed S]     # every container of the corpus (10 files), counts per
                                                            # outcome; a hung mutant is killed and the run goes on
"""
from __future__ import annotations

import collections
import json
import os
import random
import re
import selectors
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import make_corpus as M  # noqa: E402
import check_corpus as C  # noqa: E402

SEEDS = {
    "h264_aac.mp4": lambda p: M.write_video(p, M.real_frames(), audio="bbb", options={"g": "4"}),
    "h264_aac.mkv": lambda p: M.write_video(p, M.real_frames(), audio="bbb", options={"g": "4"}),
    "mpeg2_mp2.ts": lambda p: M.write_video(p, M.real_frames(), codec="mpeg2video", audio="mp2"),
    "mpeg4.avi": lambda p: M.write_video(p, M.real_frames(), codec="mpeg4"),
}
# every container of the corpus (--mutants): the CI seeds plus MOV, fragmented MP4, WebM (VP9+Opus), MPEG-PS,
# MJPEG+PCM AVI and animated GIF
ALL_SEEDS = {
    **SEEDS,
    "h264_aac.mov": lambda p: M.write_video(p, M.real_frames(), audio="bbb", options={"g": "4"}),
    "fragmented.mp4": M.fragmented,
    "vp9_opus.webm": lambda p: M.write_video(p, M.real_frames(), codec="libvpx-vp9", audio="libopus"),
    "mpeg1.mpg": lambda p: M.write_video(p, M.real_frames(), codec="mpeg1video", fmt="mpeg"),
    "mjpeg_pcm.avi": lambda p: M.write_video(p, M.real_frames(), codec="mjpeg", pix_fmt="yuvj420p",
                                             audio="pcm_s16le"),
    "anim.gif": lambda p: M.write_video(p, M.real_frames(M.CARPHONE, n=6, w=44, h=36, skip=0), codec="gif",
                                        pix_fmt="rgb8", rate=10),
}


def mutate(data: bytes, rng: random.Random) -> (bytes, str, str):
    """One of: zero 1-6 runs of 1-256 bytes, flip 1-32 bytes, cut the file at 5-95 %, or a cut plus flips.
    Returns (bytes, kind, what exactly)."""
    b = bytearray(data)
    what = []
    kind = rng.choice(["zero", "flip", "cut", "cut+flip"])
    if kind == "zero":
        for _ in range(rng.randint(1, 6)):
            i, n = rng.randrange(len(b)), rng.randint(1, 256)
            b[i:i + n] = bytes(len(b[i:i + n]))
            what.append(f"{n} B zeroed at {100 * i / len(data):.0f}%")
    if kind in ("flip", "cut+flip"):
        nflip = rng.randint(1, 32)
        for _ in range(nflip):
            i = rng.randrange(len(b))
            b[i] ^= rng.randint(1, 255)
        what.append(f"{nflip} byte(s) flipped")
    if kind in ("cut", "cut+flip"):
        b = b[:max(1, int(len(b) * rng.uniform(0.05, 0.95)))]
        what.append(f"cut at {100 * len(b) / len(data):.0f}%")
    return bytes(b), kind, ", ".join(what)


def _seed_frames(path: str) -> int:
    from vsr_engine.io.decode import VideoReader
    with VideoReader(path) as r:
        return sum(1 for _ in r)


def run_fuzz(n: int = 40, seed: int = 12, budget_s: float = 90.0, job_timeout_s: float = 45.0,
             folder: Optional[str] = None, seeds_from: Optional[dict] = None) -> dict:
    """Make ``n`` seeded mutants of the seed files (``SEEDS``, or ``seeds_from``) and run each through the CLI in
    a worker process. A mutant that runs past ``job_timeout_s`` is a hang: its worker is killed and a new one goes
    on with the next mutant. ``hang`` is the first hung job (None when none), ``hangs`` all of them."""
    rng = random.Random(seed)
    folder = folder or tempfile.mkdtemp(prefix="vsr_fuzz_")
    os.makedirs(folder, exist_ok=True)
    seeds, full = {}, {}
    for name, fn in (seeds_from or SEEDS).items():
        p = os.path.join(folder, "seed_" + name)
        if not os.path.exists(p):
            fn(p)
        seeds[name] = open(p, "rb").read()
        full[name] = _seed_frames(p)
    weights = C.tiny_weights(folder)
    jobs = []
    for i in range(n):
        name = rng.choice(sorted(seeds))
        data, kind, what = mutate(seeds[name], rng)
        inp = os.path.join(folder, f"m{i:04d}_{name}")
        with open(inp, "wb") as f:
            f.write(data)
        out = os.path.join(folder, f"m{i:04d}_out.mkv")
        jobs.append({"input": inp, "output": out, "kind": kind, "seed_file": name, "what": what,
                     "seed_frames": full[name],
                     "args": ["--model", "basicvsr", "--weights", weights, "--window", "4", "--overlap", "2",
                              "--preset", "ultrafast", "-q"]})
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "VSR_ENGINE_BACKEND": "torch", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    results: List[dict] = []
    hangs: List[dict] = []
    died = None
    t0 = time.monotonic()
    nxt = 0                                   # the next job a worker starts with
    while nxt < len(jobs) and time.monotonic() - t0 < budget_s and died is None:
        jobs_path = os.path.join(folder, f"jobs_{nxt:04d}.json")
        with open(jobs_path, "w") as f:
            json.dump(jobs[nxt:], f)
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fuzz_worker.py"), jobs_path],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        t_job = time.monotonic()
        base = nxt
        try:
            while nxt < len(jobs):
                if time.monotonic() - t0 > budget_s:
                    break
                left = min(job_timeout_s - (time.monotonic() - t_job), budget_s - (time.monotonic() - t0))
                if not sel.select(timeout=max(0.1, left)):
                    if time.monotonic() - t_job >= job_timeout_s:
                        hangs.append(jobs[nxt])
                        nxt += 1                  # kill this worker; a new one goes on after the hung mutant
                        break
                    continue
                line = proc.stdout.readline()
                if not line:
                    died = proc.stderr.read()[-2000:] or f"worker exited with {proc.wait()}"
                    break
                r = json.loads(line)
                r.update(jobs[base + r["i"]])
                r["problems"] = judge(r)
                r["frames_out"] = r.get("frames_out")
                results.append(r)
                nxt += 1
                t_job = time.monotonic()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            sel.close()
            for fh in (proc.stdout, proc.stderr):
                fh.close()
    return {"results": results, "hang": hangs[0] if hangs else None, "hangs": hangs, "worker_died": died,
            "jobs": len(jobs), "seconds": time.monotonic() - t0, "folder": folder}


def judge(r: dict) -> List[str]:
    from vsr_engine.video import partial_dir_for
    p = []
    rc, err, out = r["rc"], r["stderr"], r["output"]
    if rc not in (0, 2, 3):
        p.append(f"exit {rc}")
    if "Traceback" in err or "RAISED" in err:
        p.append("traceback without --debug")
    if "internal error" in err:
        p.append("internal error: " + err.strip().splitlines()[-1][:200])
    exists = os.path.exists(out)
    partial = os.path.exists(partial_dir_for(os.path.abspath(out)))
    if rc not in (0, 3):
        if exists:
            p.append("a file at OUTPUT after a failed run")
        if partial and rc == 2 and "pass --resume" not in err and "--force to start over" not in err:
            # a partial folder is kept (for --resume) only when finished windows were committed
            try:
                with open(os.path.join(partial_dir_for(os.path.abspath(out)), "state.json")) as f:
                    done = json.load(f).get("frames_done")
            except (OSError, ValueError):
                done = 0
            if not done:
                p.append("a partial folder without finished windows left after a failed run")
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        if rc == 2 and (len(lines) != 1 or not lines[0].startswith("vsr-engine: error:")):
            p.append(f"not one error line: {lines[:3]}")
        return p
    if not exists:
        p.append("success without output")
        return p
    facts = C.decode_all(out)
    r["frames_out"] = len(facts["times"])
    m = re.search(r": (\d+) frames \(", r["stdout"])
    if facts["errors"]:
        p.append(f"output does not decode cleanly ({facts['first_error']})")
    if not m or int(m.group(1)) != len(facts["times"]) or not facts["times"]:
        p.append(f"output holds {len(facts['times'])} frames, the run said {m.group(1) if m else '?'}")
    full = r.get("seed_frames")
    if rc == 0 and full and len(facts["times"]) < full:
        p.append(f"silent loss: exit 0 with {len(facts['times'])} of {full} frames")
    return p


OUTCOMES = ("upscaled, all frames (exit 0)", "upscaled what decodes + warning (exit 3)",
            "refused, one error line (exit 2)", "silent loss (exit 0, frames missing)", "hang", "traceback",
            "failed run left a complete-looking output", "other rule broken")


def outcome(r: dict) -> str:
    """One outcome per mutant, the worst first."""
    probs = " ".join(r.get("problems") or [])
    if "traceback" in probs or "internal error" in probs or r["rc"] not in (0, 2, 3):
        return "traceback"
    if "file at OUTPUT" in probs or "partial folder" in probs:
        return "failed run left a complete-looking output"
    if "silent loss" in probs:
        return "silent loss (exit 0, frames missing)"
    if probs:
        return "other rule broken"
    return {0: OUTCOMES[0], 3: OUTCOMES[1], 2: OUTCOMES[2]}[r["rc"]]


def counts(res: dict) -> str:
    """Counts per outcome (every outcome listed, zeros too) and per seed file, as Markdown."""
    c = collections.Counter(outcome(r) for r in res["results"])
    c["hang"] += len(res.get("hangs") or [])
    rows = ["| outcome | mutants |", "| --- | --- |"] + [f"| {o} | {c[o]} |" for o in OUTCOMES]
    per = collections.Counter((r["seed_file"], r["rc"]) for r in res["results"])
    names = sorted({r["seed_file"] for r in res["results"]})
    rows += ["", "| seed file | exit 0 | exit 3 | exit 2 |", "| --- | --- | --- | --- |"]
    rows += [f"| {nm} | {per[(nm, 0)]} | {per[(nm, 3)]} | {per[(nm, 2)]} |" for nm in names]
    done = len(res["results"]) + len(res.get("hangs") or [])
    rows.append(f"\n{done} of {res['jobs']} mutants in {res['seconds']:.0f} s"
                + (f"; the worker died: {res['worker_died'][-300:]}" if res.get("worker_died") else ""))
    return "\n".join(rows)


def table(res: dict) -> str:
    """Counts per mutation kind and outcome, as a Markdown table."""
    outcome = collections.Counter()
    kinds = collections.Counter()
    for r in res["results"]:
        what = {0: "upscaled (exit 0)", 2: "refused, one error line (exit 2)", 3: "upscaled what decodes + warning "
                "(exit 3)"}.get(r["rc"], f"exit {r['rc']}")
        outcome[(r["kind"], what)] += 1
        kinds[r["kind"]] += 1
    rows = ["| mutation | mutants | outcome | count | of which all frames out |", "| --- | --- | --- | --- | --- |"]
    full = collections.Counter((r["kind"], r["rc"]) for r in res["results"]
                               if r.get("frames_out") == r.get("seed_frames", M.N))
    for (kind, what), k in sorted(outcome.items()):
        rc = {"upscaled (exit 0)": 0, "upscaled what decodes + warning (exit 3)": 3}.get(what)
        rows.append(f"| {kind} | {kinds[kind]} | {what} | {k} | {full[(kind, rc)] if rc is not None else '-'} |")
    bad = [r for r in res["results"] if r["problems"]]
    rows.append(f"\n{len(res['results'])} of {res['jobs']} mutants run in {res['seconds']:.0f} s; rule violations: "
                f"{len(bad)}; hang: {res['hang']['input'] if res['hang'] else 'none'}")
    for r in bad:
        rows.append(f"- {os.path.basename(r['input'])} ({r['kind']}): {'; '.join(r['problems'])}")
    if os.environ.get("FUZZ_DETAIL"):
        for r in res["results"]:
            msg = (r["stderr"].strip().splitlines() or [""])[-1][:150]
            fr = (f", {r['frames_out']} of {r.get('seed_frames', M.N)} frames out"
                  if r.get("frames_out") is not None else "")
            rows.append(f"- {r['seed_file']}: {r['what']} -> exit {r['rc']}{fr} {msg}")
    return "\n".join(rows)


def main(argv=None) -> int:
    import argparse
    sys.path.insert(0, ROOT)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=40, help="mutants of the 4 CI seed files (default 40)")
    ap.add_argument("seed_pos", nargs="?", type=int, default=None, metavar="SEED")
    ap.add_argument("--mutants", type=int, default=None, metavar="N",
                    help="N mutants of every container of the corpus; prints counts per outcome")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default 12)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all (default: N x 45 s)")
    ap.add_argument("--timeout", type=float, default=45.0, help="seconds per mutant before it counts as a hang")
    ap.add_argument("--folder", default=None, help="where mutants and outputs go (default: a temp folder)")
    a = ap.parse_args(argv)
    seed = a.seed if a.seed is not None else (a.seed_pos if a.seed_pos is not None else 12)
    if a.mutants is not None:
        if a.mutants < 1:
            ap.error("--mutants needs at least 1")
        budget = a.budget or float(os.environ.get("FUZZ_BUDGET_S", a.mutants * a.timeout))
        res = run_fuzz(a.mutants, seed, budget_s=budget, job_timeout_s=a.timeout, folder=a.folder,
                       seeds_from=ALL_SEEDS)
        print(counts(res))
        bad = [r for r in res["results"] if r["problems"]]
        for r in bad:
            print(f"- {os.path.basename(r['input'])} ({r['what']}): {'; '.join(r['problems'])}")
        for h in res["hangs"]:
            print(f"- {os.path.basename(h['input'])} ({h['what']}): hang")
        return 1 if (bad or res["hangs"] or res["worker_died"]) else 0
    res = run_fuzz(a.n, seed, budget_s=a.budget or float(os.environ.get("FUZZ_BUDGET_S", 600)),
                   job_timeout_s=a.timeout, folder=a.folder)
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
