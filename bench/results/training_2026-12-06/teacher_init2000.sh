#!/bin/bash
# Issue 25, session 2026-12-06 (second): students initialised from the teacher (its first 4 blocks per trunk, 64
# features), 2,000 steps, seed 0, one thread each, side by side: data-free on dead leaves (teacher outputs cached
# per pooled clip) and the same student trained with data. Run from the repo root; R = run folder.
R=${R:-/work/runs/ti2000}
mkdir -p $R
common="--init teacher --num-feat 64 --num-block 4 --steps 2000 --threads 1 --precision auto --device cpu \
 --log-every 100 --save-every 500 --seed 0"
( OMP_NUM_THREADS=1 nice python -m vsr_engine.training.distill --data-free --synth leaves --cache-teacher \
    --out $R/leaves $common > $R/leaves.log 2>&1 &&
  OMP_NUM_THREADS=1 nice python bench/eval_distill.py $R/leaves/student.safetensors > $R/leaves.eval 2>&1 ) &
( OMP_NUM_THREADS=1 nice python -m vsr_engine.training.distill --out $R/data $common > $R/data.log 2>&1 &&
  OMP_NUM_THREADS=1 nice python bench/eval_distill.py $R/data/student.safetensors > $R/data.eval 2>&1 ) &
wait
