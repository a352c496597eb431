"""Before/after wall time of the README sample clip, two checkouts timed alternately in one session.

    python bench/compare_sample.py OLD_CHECKOUT NEW_CHECKOUT [--rounds 2] [-- extra upscale args]

Runs ``python3 -m vsr_engine.cli upscale vsr_engine/assets/sample.mp4 OUT --force`` from each checkout's root
(``PYTHONPATH`` = that checkout), alternating old/new ``--rounds`` times, and prints each wall time and the ratio
new/old of the medians (the issue's bar: new <= 1.05 x old on CPU). Make the old checkout with e.g.
``git worktree add --detach /tmp/vsr_old 40d6e07``. Run it alone on the machine: timings of a shared CPU are noise.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def _child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(root: str, out: str, extra):
    """(wall seconds, CPU seconds of the child: user + sys, less sensitive to a shared machine)."""
    env = {**os.environ, "PYTHONPATH": root}
    cmd = [sys.executable, "-m", "vsr_engine.cli", "upscale", os.path.join(root, "vsr_engine", "assets", "sample.mp4"),
           out, "--force", "-q", *extra]
    c0, t0 = _child_cpu(), time.perf_counter()
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    dt, cpu = time.perf_counter() - t0, _child_cpu() - c0
    if r.returncode != 0:
        raise SystemExit(f"{root}: exit {r.returncode}: {r.stderr.strip()[-500:]}")
    print(f"  {root}: {dt:.2f} s wall, {cpu:.2f} s CPU  ({r.stdout.strip()})", flush=True)
    return dt, cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=2)
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    a = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    a.extra = extra
    times = {"old": [], "new": []}
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.rounds):
            for key in (("old", "new") if i % 2 == 0 else ("new", "old")):
                root = os.path.abspath(getattr(a, key))
                times[key].append(run_once(root, os.path.join(d, f"{key}.mp4"), a.extra))
    for k, what in ((0, "wall"), (1, "CPU")):
        mo = statistics.median(t[k] for t in times["old"])
        mn = statistics.median(t[k] for t in times["new"])
        print(f"{what}: old median {mo:.2f} s, new median {mn:.2f} s, new/old = {mn / mo:.3f} "
              f"({'within' if mn <= 1.05 * mo else 'OVER'} the 5 % bar)")


if __name__ == "__main__":
    main()
