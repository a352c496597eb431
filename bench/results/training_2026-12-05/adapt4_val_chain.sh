#!/bin/bash
# issue 25 (adapt4): validation chains on bikes frames 120..179 (eval_adapt.py make val --start 120), seed 0, 1000 steps;
# adapt4_run1.sh is the per-run wrapper (same flags as adapt_chain_6000.sh). Scores: bench/results/adapt_val_1000*.json
# validation chain (bikes frames 120..179 target), seed 0, 1000 steps; sequential, one process at a time
cd /work/runs/adapt4
while ! grep -q v_sty1_600 walltimes.txt 2>/dev/null; do sleep 2; done
S=1000
./run1.sh v_src_ns val/target.mp4 $S 0 --source-only --no-lr-skip
./run1.sh v_ada_ns val/target.mp4 $S 0 --no-lr-skip
./run1.sh v_src val/target.mp4 $S 0 --source-only
./run1.sh v_ada val/target.mp4 $S 0
export PYTHONPATH=/work/wt/adapt4 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nice -n 10 python3 /work/wt/adapt4/bench/eval_adapt.py score val v_src_ns/usrda.safetensors v_ada_ns/usrda.safetensors v_src/usrda.safetensors v_ada/usrda.safetensors --out val_score1.json > val_score1.txt 2>&1
echo DONE >> val_score1.txt
#!/bin/bash
cd /work/runs/adapt4
S=1000
./run1.sh v_ada_sty01 val/target.mp4 $S 0 --w-sty 0.1
./run1.sh v_ada_sty003 val/target.mp4 $S 0 --w-sty 0.03
./run1.sh v_ada_ns_sty01 val/target.mp4 $S 0 --w-sty 0.1 --no-lr-skip
export PYTHONPATH=/work/wt/adapt4 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
nice -n 10 python3 diag2.py v_ada_sty01/last.pth v_ada_sty003/last.pth v_ada_ns_sty01/last.pth > diag_2.txt 2>&1
nice -n 10 python3 /work/wt/adapt4/bench/eval_adapt.py score val v_ada_sty01/usrda.safetensors v_ada_sty003/usrda.safetensors v_ada_ns_sty01/usrda.safetensors --out val_score2.json > val_score2.txt 2>&1
echo DONE >> val_score2.txt
