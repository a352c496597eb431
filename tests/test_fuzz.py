"""Fuzzing ``vsr-engine upscale`` (issue 12): 40 seeded mutants of real derived files (bytes zeroed, flipped, cut),
each in a worker process with a time limit, in at most 90 s: never a hang, never a traceback or internal error
without --debug, exit 0 / 2 / 3, one error line on failure, and no file at OUTPUT unless the run succeeded and the
output decodes completely. ``tests/corpus/fuzz.py`` runs it by hand with other counts and seeds."""
from __future__ import annotations

import os
import sys

import pytest

av = pytest.importorskip("av")

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus"))
import fuzz as F  # noqa: E402
import make_corpus as M  # noqa: E402

pytestmark = pytest.mark.skipif(not M.data_available(), reason=f"real clips not found under {M.DATA}")


def test_fuzz_no_hang_no_traceback_no_false_output(tmp_path):
    res = F.run_fuzz(n=40, seed=12, budget_s=90.0, job_timeout_s=45.0, folder=str(tmp_path))
    report = F.table(res)
    print(report)
    assert res["hang"] is None, report
    assert res["worker_died"] is None, res["worker_died"]
    # bounded in time: on a slow shared machine fewer than 40 may run; enough must run to mean something
    assert len(res["results"]) >= 15, report
    bad = [r for r in res["results"] if r["problems"]]
    assert not bad, report
    # the mutants exercise every outcome (else the mutations are too weak or too strong to test anything)
    assert {r["rc"] for r in res["results"]} >= {2, 3}, report
