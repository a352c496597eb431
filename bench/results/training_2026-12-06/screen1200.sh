#!/bin/bash
# issue 25 screening, 1200 steps seed 0 (same recipe as distill_vid4_2026-12-05.json's runs): A = dead-leaves inputs, B = the paper's generator stepped every 5 student steps (was 50)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/main
R=/work/runs/s1200; mkdir -p $R
C="--data-free --steps 1200 --threads 1 --precision auto --device cpu --log-every 100 --save-every 400 --seed 0"
run() { name=$1; shift; echo "START $name $(date -u +%T)" >> $R/times.txt
  nice -n 10 python3 -m vsr_engine.training.distill --out $R/$name $C "$@" > $R/$name.log 2>&1
  echo "EVAL $name $(date -u +%T)" >> $R/times.txt
  nice -n 10 python3 bench/eval_distill.py $R/$name/student.safetensors > $R/$name.eval 2>&1
  echo "END $name $(date -u +%T)" >> $R/times.txt; }
run "$@"
