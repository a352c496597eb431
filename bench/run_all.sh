#!/usr/bin/env bash
# All op microbenchmarks in one GPU call: fp16, bf16 and fp32, forward and forward+backward, rows appended to
# bench/results/ops.csv. Usage: bash bench/run_all.sh [extra args for every script, e.g. --iters 100]
# Build the CUDA kernels first if they are not (python setup.py build_ext --inplace, or let the JIT do it).
# This does not fit one 10-minute device call (about 90 cold compiles); for that use bench/gpu_proof.py.
set -uo pipefail
cd "$(dirname "$0")/.."
python3 -c "from vsr_engine.ops import format_backend_info; print(format_backend_info())"
status=0
for dtype in fp16 bf16 fp32; do
  for op in flow_warp pixel_shuffle dwpw_conv2d meta_upscale clean_step; do
    echo "== bench_${op} --dtype ${dtype}"
    python3 "bench/bench_${op}.py" --dtype "${dtype}" --backward "$@" || status=$?
  done
done
exit ${status}
