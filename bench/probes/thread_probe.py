"""Which OS threads burn CPU during a CPU Engine run: per-thread CPU seconds from /proc/self/task, labelled with
the Python thread that owns the native id (threads with no Python owner are OpenMP / oneDNN / libav / x264
workers). Usage: python3 bench/probes/thread_probe.py [clip] [--frames N] [--threads T]"""
import argparse
import os
import threading
import time

import torch


def _ticks(tid: int) -> float:
    with open(f"/proc/self/task/{tid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", nargs="?", default="vsr_engine/assets/sample.mp4")
    ap.add_argument("--out", default="/tmp/thread_probe.mp4")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from vsr_engine import Engine
    seen, names, stop = {}, {}, threading.Event()

    def poll():
        while not stop.is_set():
            for t in threading.enumerate():
                if t.native_id:
                    names[t.native_id] = t.name
            for tid in os.listdir("/proc/self/task"):
                try:
                    seen[int(tid)] = _ticks(int(tid))
                except OSError:
                    pass
            time.sleep(0.05)

    eng = Engine("basicvsr", device="cpu", dtype=args.dtype)
    base = {int(t): _ticks(int(t)) for t in os.listdir("/proc/self/task")}
    mon = threading.Thread(target=poll, name="probe", daemon=True)
    mon.start()
    t0 = time.perf_counter()
    s = eng.run(args.clip, args.out, force=True)
    wall = time.perf_counter() - t0
    stop.set()
    mon.join()
    names[threading.main_thread().native_id] = "main (compute)"
    rows = sorted(((seen[t] - base.get(t, 0.0), t) for t in seen), reverse=True)
    print(f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, wall {wall:.1f} s, "
          f"{s.frames_out} frames, plan {eng.plan()}")
    print(f"{'cpu s':>7}  tid      owner")
    for cpu, t in rows:
        if cpu >= 0.05:
            print(f"{cpu:7.2f}  {t:<8} {names.get(t, '(native: OpenMP/oneDNN/libav/x264)')}")
    print(f"threads seen: {len(seen)}; total cpu {sum(c for c, _ in rows):.1f} s")


if __name__ == "__main__":
    main()
