"""Where the CPU plan's model step spends its time, and how fast its convolutions run by themselves.

    python3 bench/probes/conv_share.py [--frames 4] [--threads 1]

Profiles one window of the fast step (BasicVSR, official weights, REDS LR demo frames at 180x320) with
torch.profiler: top ops by self CPU time, the convolution ops' share, and the convolutions' own TFLOP/s
(convolution FLOPs from FlopCounterMode / time inside convolution ops). Beside it, in the same process, GEMMs in
the plan's dtype: the large 4096^3 one (the peak bench_cpu.py uses) and one of a 3x3 64->64 convolution's implicit-GEMM shape
(M = 180*320 pixels, K = 576, N = 64), to tell a kernel shortfall from a shape ceiling."""
import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
from bench_cpu import conv_flops, gemm_tflops, real_frames  # noqa: E402
from vsr_engine import load_model  # noqa: E402
from vsr_engine.cpu_plan import plan  # noqa: E402
from vsr_engine.fast import accelerate  # noqa: E402


def gemm_shape_tflops(dtype, m, k, n, reps=5):
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    a @ b
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - t)
    return 2 * m * k * n / min(ts) / 1e12


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dt = plan()["dtype"]
    x = real_frames(a.frames, (180, 320))
    m = load_model("basicvsr").eval()
    flops = conv_flops(m, x)
    fast = accelerate(m, dtype=dt)
    with torch.no_grad():
        fast(x)
        t = time.perf_counter()
        fast(x)
        wall = time.perf_counter() - t
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            fast(x)
    ev = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ev)
    conv = sum(e.self_cpu_time_total for e in ev if "conv" in e.key.lower())
    print(f"plan dtype {dt}, threads {torch.get_num_threads()}, {a.frames} frames 180x320, step {wall:.2f} s "
          f"(unprofiled)")
    print("top ops by self CPU time:")
    for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {100 * e.self_cpu_time_total / total:5.1f}%  {e.self_cpu_time_total / 1e3:9.1f} ms  {e.key}")
    conv_tf = flops / (conv / 1e6) / 1e12
    peak = gemm_tflops(dt, 4096)
    shape = gemm_shape_tflops(dt, 180 * 320, 576, 64)
    print(f"convolution ops: {100 * conv / total:.1f}% of the step; {flops / 1e9:.1f} GFLOP in "
          f"{conv / 1e6:.2f} s = {conv_tf:.3f} TFLOP/s")
    print(f"GEMM {str(dt).split('.')[1]}: 4096^3 {peak:.3f} TFLOP/s (peak); 57600x576x64 (a 3x3 64->64 conv's "
          f"shape) {shape:.3f} TFLOP/s")
    print(f"convolutions at {100 * conv_tf / peak:.0f}% of the GEMM peak, {100 * conv_tf / shape:.0f}% of the "
          f"same-shape GEMM; the whole step at {100 * flops / wall / 1e12 / peak:.0f}% of the peak")


if __name__ == "__main__":
    main()
