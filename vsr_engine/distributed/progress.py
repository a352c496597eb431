"""One progress display for a whole batch job: frames done / total, fps, ETA, workers, failures."""
from __future__ import annotations

import sys
import time

__all__ = ["JobProgress"]


class JobProgress:
    def __init__(self, total: int, quiet: bool = False, done: int = 0, stream=None):
        self.total, self.done, self.quiet = int(total), int(done), quiet
        self.start_done = self.done
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.workers = 0
        self.failures = 0
        self.shown = False

    def add(self, frames: int) -> None:
        self.done += int(frames)
        self.show(force=True)

    def line(self) -> str:
        el = time.perf_counter() - self.t0
        fps = (self.done - self.start_done) / el if el > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = ""
        if fps > 0 and self.done < self.total:
            r = (self.total - self.done) / fps
            eta = f"  ETA {int(r // 3600)}:{int(r % 3600 // 60):02d}:{int(r % 60):02d}"
        return (f"{self.done}/{self.total} frames {pct:5.1f}%  {fps:.2f} fps{eta}  workers {self.workers}  "
                f"failures {self.failures}")

    def show(self, workers=None, failures=None, force: bool = False) -> None:
        if workers is not None:
            self.workers = workers
        if failures is not None:
            self.failures = failures
        if self.quiet:
            return
        now = time.perf_counter()
        if not force and now - self.last < (0.5 if self.tty else 10.0):
            return
        self.last = now
        self.stream.write(("\r" + self.line() + "   ") if self.tty else self.line() + "\n")
        self.stream.flush()
        self.shown = True

    def note(self, msg: str) -> None:
        if self.quiet:
            return
        if self.tty and self.shown:
            self.stream.write("\n")
        self.stream.write(msg + "\n")
        self.stream.flush()
        self.shown = False

    def end(self) -> None:
        if self.quiet:
            return
        if self.tty and self.shown:
            self.stream.write("\n")
        self.stream.flush()
