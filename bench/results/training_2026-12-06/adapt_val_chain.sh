#!/bin/bash
# issue 25: validation target (bikes 120..179, eval_adapt.py make val --start 120; re-made this session, so the
# baselines are re-run on it), seed 0, 1000 steps, sequential: frequency-separated style (--sty-band high --w-low 1)
R=/work/runs/adapt5; H=/work/main/bench/results/training_2026-12-06
for spec in "v_src --source-only" "v_ada" "v_hb01 --sty-band high --w-low 1 --w-sty 0.1" "v_hb1 --sty-band high --w-low 1 --w-sty 1"; do
  set -- $spec; name=$1; shift
  $H/adapt_run1.sh $name $R/val/target.mp4 1000 0 "$@"
done
cd /work/main && OMP_NUM_THREADS=1 nice -n 10 python3 bench/eval_adapt.py score $R/val $R/v_src/usrda.safetensors $R/v_ada/usrda.safetensors $R/v_hb01/usrda.safetensors $R/v_hb1/usrda.safetensors --out $R/val_score.json > $R/val_score.txt 2>&1
echo DONE >> $R/val_score.txt
