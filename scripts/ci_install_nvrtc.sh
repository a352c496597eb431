#!/usr/bin/env bash
# CI extra for the kernel AOT checks (tests/ops/test_aot_kernels.py): CuPy's NVRTC binding and the NVRTC library
# (no GPU or driver needed). Without them the NVRTC part of the check skips with its reason; the triton part and
# the committed-table check still run. nvcc (for the nvcc rows) is optional and not installed here.
set -euo pipefail
python3 -m pip install -q "cupy-cuda13x==14.*" "nvidia-cuda-nvrtc==13.*"
