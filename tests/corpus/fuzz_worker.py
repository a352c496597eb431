"""Fuzz worker: runs ``vsr-engine upscale`` (cli.main, in this process) on each job read from a JSON file and prints
one JSON line per job (exit status, stderr, stdout) as soon as it is done, so that the parent can time each job out.

    python3 tests/corpus/fuzz_worker.py JOBS.json      # [{"input": ..., "output": ..., "args": [...]}, ...]
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys


def main(jobs_path: str) -> int:
    sys.path.insert(0, os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")))
    import torch
    torch.set_num_threads(1)
    from vsr_engine import cli
    with open(jobs_path) as f:
        jobs = json.load(f)
    real_out = sys.stdout
    for i, job in enumerate(jobs):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = cli.main(["upscale", job["input"], job["output"], *job.get("args", [])])
            except BaseException as e:  # cli.main must not raise; record it as a failure
                import traceback
                err.write("RAISED " + "".join(traceback.format_exception(e)))
                rc = -1
        real_out.write(json.dumps({"i": i, "rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue()}) + "\n")
        real_out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
