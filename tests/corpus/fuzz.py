"""Seeded fuzzing of ``vsr-engine upscale``: real derived files (H.264+AAC MP4, Matroska, MPEG-TS, AVI) with random
bytes zeroed, flipped or cut. Every mutant runs in a worker process with a time limit; the rules checked are: no
hang, exit status 0 / 2 / 3, no traceback or "internal error" without --debug, one error line on failure, and no
file at OUTPUT (nor a partial folder) unless the run succeeded and the output decodes completely.

    python3 tests/corpus/fuzz.py [N] [SEED]        # prints the outcome table
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


def run_fuzz(n: int = 40, seed: int = 12, budget_s: float = 90.0, job_timeout_s: float = 45.0,
             folder: Optional[str] = None) -> dict:
    rng = random.Random(seed)
    folder = folder or tempfile.mkdtemp(prefix="vsr_fuzz_")
    seeds = {}
    for name, fn in SEEDS.items():
        p = os.path.join(folder, "seed_" + name)
        if not os.path.exists(p):
            fn(p)
        seeds[name] = open(p, "rb").read()
    weights = C.tiny_weights(folder)
    jobs = []
    for i in range(n):
        name = rng.choice(sorted(seeds))
        data, kind, what = mutate(seeds[name], rng)
        inp = os.path.join(folder, f"m{i:03d}_{name}")
        with open(inp, "wb") as f:
            f.write(data)
        out = os.path.join(folder, f"m{i:03d}_out.mkv")
        jobs.append({"input": inp, "output": out, "kind": kind, "seed_file": name, "what": what,
                     "args": ["--model", "basicvsr", "--weights", weights, "--window", "4", "--overlap", "2",
                              "--preset", "ultrafast", "-q"]})
    jobs_path = os.path.join(folder, "jobs.json")
    with open(jobs_path, "w") as f:
        json.dump(jobs, f)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "VSR_ENGINE_BACKEND": "torch", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fuzz_worker.py"), jobs_path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    results: List[dict] = []
    hang = None
    t0 = time.monotonic()
    t_job = t0
    try:
        while len(results) < len(jobs):
            if time.monotonic() - t0 > budget_s:
                break
            left = min(job_timeout_s - (time.monotonic() - t_job), budget_s - (time.monotonic() - t0))
            if not sel.select(timeout=max(0.1, left)):
                if time.monotonic() - t_job >= job_timeout_s:
                    hang = jobs[len(results)]
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break           # the worker died
            r = json.loads(line)
            r.update(jobs[r["i"]])
            r["problems"] = judge(r)
            r["frames_out"] = r.get("frames_out")
            results.append(r)
            t_job = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    done = len(results) == len(jobs) or hang or time.monotonic() - t0 > budget_s
    died = None if done else proc.stderr.read()[-2000:]
    return {"results": results, "hang": hang, "worker_died": died, "jobs": len(jobs),
            "seconds": time.monotonic() - t0, "folder": folder}


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
    return p


def table(res: dict) -> str:
    """Counts per mutation kind and outcome, as a Markdown table."""
    outcome = collections.Counter()
    kinds = collections.Counter()
    for r in res["results"]:
        what = {0: "upscaled (exit 0)", 2: "refused, one error line (exit 2)", 3: "upscaled what decodes + warning "
                "(exit 3)"}.get(r["rc"], f"exit {r['rc']}")
        outcome[(r["kind"], what)] += 1
        kinds[r["kind"]] += 1
    rows = ["| mutation | mutants | outcome | count | of which all 8 frames out |", "| --- | --- | --- | --- | --- |"]
    full = collections.Counter((r["kind"], r["rc"]) for r in res["results"] if r.get("frames_out") == M.N)
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
            fr = f", {r['frames_out']} of {M.N} frames out" if r.get("frames_out") is not None else ""
            rows.append(f"- {r['seed_file']}: {r['what']} -> exit {r['rc']}{fr} {msg}")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    seed = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    print(table(run_fuzz(n, seed, budget_s=float(os.environ.get("FUZZ_BUDGET_S", 600)))))
