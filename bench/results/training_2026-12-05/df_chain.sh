#!/bin/bash
export PYTHONPATH=/work/wt/dfree OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/wt/dfree
while kill -0 31274 2>/dev/null; do sleep 5; done
C="--steps 1200 --threads 1 --precision auto --device cpu --log-every 50 --save-every 200 --seed 0"
date -u > /work/wt/dfree_runs/chain_times.txt
/usr/bin/time -f "%e s wall" nice -n 10 python3 -m vsr_engine.training.distill --data-free --out /work/wt/dfree_runs/df_free $C > /work/wt/dfree_runs/df_free.log 2>&1
date -u >> /work/wt/dfree_runs/chain_times.txt
nice -n 10 python3 bench/eval_distill.py --bicubic /work/wt/dfree_runs/df_data/student.safetensors /work/wt/dfree_runs/df_free/student.safetensors > /work/wt/dfree_runs/eval1.log 2>&1
date -u >> /work/wt/dfree_runs/chain_times.txt
/usr/bin/time -f "%e s wall" nice -n 10 python3 -m vsr_engine.training.distill --data-free --stages 1 --out /work/wt/dfree_runs/df_free_oneshot $C > /work/wt/dfree_runs/df_free_oneshot.log 2>&1
date -u >> /work/wt/dfree_runs/chain_times.txt
nice -n 10 python3 bench/eval_distill.py /work/wt/dfree_runs/df_free_oneshot/student.safetensors > /work/wt/dfree_runs/eval2.log 2>&1
date -u >> /work/wt/dfree_runs/chain_times.txt
