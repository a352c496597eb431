"""The fast step's Triton kernels compile for sm_90 with real launch attributes, with the installed triton and with
the device's triton 3.6 when .ci/run installed it into build/triton36 (no GPU needed)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T36 = os.path.join(ROOT, "build", "triton36")


def _run(extra_path=None):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, ROOT, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "aot_fast_kernels.py")], env=env,
                          capture_output=True, text=True, timeout=900)


def test_installed_triton():
    pytest.importorskip("triton")
    r = _run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert " 0 failed" in r.stdout


@pytest.mark.skipif(not os.path.isdir(os.path.join(T36, "triton")), reason="triton 3.6 not in build/triton36")
def test_device_triton_36():
    r = _run(T36)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("triton 3.6") and " 0 failed" in r.stdout
