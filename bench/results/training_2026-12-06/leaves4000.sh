#!/bin/bash
# issue 25: data-free distillation on dead-leaves clips at 4000 steps, seed 0 (same recipe and student as
# distill_vid4_4000.json's runs, whose with-data 26.772 / generator 25.783 figures it is compared with), then Vid4 eval
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/main
R=/work/runs/l4000; mkdir -p $R
echo "START $(date -u +%T)" >> $R/times.txt
nice -n 10 python3 -m vsr_engine.training.distill --data-free --synth leaves --out $R/leaves --steps 4000 --threads 1 --precision auto --device cpu --log-every 100 --save-every 500 --seed 0 > $R/leaves.log 2>&1
echo "EVAL $(date -u +%T)" >> $R/times.txt
nice -n 10 python3 bench/eval_distill.py $R/leaves/student.safetensors > $R/leaves.eval 2>&1
echo "END $(date -u +%T)" >> $R/times.txt
