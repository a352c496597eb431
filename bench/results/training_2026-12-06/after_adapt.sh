#!/bin/bash
# after the adaptation validation chain: the one-shot (--stages 1) dead-leaves student at 1200 steps (progressive vs one-shot)
while ! grep -q DONE /work/runs/adapt5/val_score.txt 2>/dev/null; do sleep 10; done
/work/main/bench/results/training_2026-12-06/screen1200.sh leaves_oneshot --synth leaves --stages 1
