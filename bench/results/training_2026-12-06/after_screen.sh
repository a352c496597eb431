#!/bin/bash
# waits for the 1200-step leaves screening to finish, then runs the adaptation validation chain in its slot
while ! grep -q "END leaves" /work/runs/s1200/times.txt 2>/dev/null; do sleep 10; done
/work/main/bench/results/training_2026-12-06/adapt_val_chain.sh
