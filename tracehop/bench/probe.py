"""The CPU probe: a fixed piece of pure-Python work, timed every fraction of a second in its own process.

It measures how fast a CPU second is right now, so each window's throughput can be normalised
(stats.normalise_rps). It times the loop by the process's own CPU clock, not the wall clock: under
load both cores are busy with the services and the wall time would mostly measure waiting for a core,
not the speed of one. The wall time is kept as well (it shows contention).

It runs in a separate process so that its work is never counted as the bench's (or the load
generator's) own CPU, and with a low duty cycle (a few ms every 200 ms) so it barely competes.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from tracehop.bench.stats import median

DEFAULT_INTERVAL_S = 0.2
# About 5 ms of pure Python on the machines this project runs on: long enough for the CPU clock to
# resolve it well, short enough to stay a small load.
DEFAULT_WORK = 100_000


@dataclass(frozen=True)
class ProbeSample:
    at: float  # time.monotonic() of the end of the loop (CLOCK_MONOTONIC is system-wide on Linux)
    cpu_ms: float
    wall_ms: float


def fixed_work(iterations: int) -> int:
    """Interpreter work of the same kind the services do (bytecode, small ints, a dict)."""
    total = 0
    seen: dict[int, int] = {}
    for i in range(iterations):
        total += (i * 7) % 13
        seen[i & 255] = total
    return total + len(seen)


def probe_once(iterations: int = DEFAULT_WORK) -> tuple[float, float]:
    """(cpu_ms, wall_ms) of one run of the fixed work."""
    cpu0, wall0 = time.thread_time_ns(), time.perf_counter_ns()
    fixed_work(iterations)
    return (time.thread_time_ns() - cpu0) / 1e6, (time.perf_counter_ns() - wall0) / 1e6


def run_probe(interval_s: float = DEFAULT_INTERVAL_S, iterations: int = DEFAULT_WORK) -> None:
    """The probe process's main loop: one line `monotonic cpu_ms wall_ms` per run, until killed."""
    while True:
        cpu_ms, wall_ms = probe_once(iterations)
        print(f"{time.monotonic():.6f} {cpu_ms:.4f} {wall_ms:.4f}", flush=True)
        time.sleep(interval_s)


def parse_probe_line(line: str) -> ProbeSample | None:
    try:
        at, cpu_ms, wall_ms = (float(part) for part in line.split())
    except ValueError:
        return None
    return ProbeSample(at, cpu_ms, wall_ms)


def window_probe(samples: list[ProbeSample], start: float, end: float) -> tuple[float | None, float | None]:
    """Median (cpu_ms, wall_ms) of the probe runs that ended inside [start, end]."""
    inside = [sample for sample in samples if start <= sample.at <= end]
    return median(s.cpu_ms for s in inside), median(s.wall_ms for s in inside)


class CpuProbe:
    """The probe process and the samples it has reported so far (context manager)."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, iterations: int = DEFAULT_WORK) -> None:
        self._command = [
            sys.executable,
            "-c",
            f"from tracehop.bench.probe import run_probe; run_probe({interval_s!r}, {iterations!r})",
        ]
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._samples: list[ProbeSample] = []

    def start(self) -> CpuProbe:
        self._process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, name="cpu-probe-reader", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            sample = parse_probe_line(line)
            if sample is not None:
                with self._lock:
                    self._samples.append(sample)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def samples(self) -> list[ProbeSample]:
        with self._lock:
            return list(self._samples)

    def window(self, start: float, end: float) -> tuple[float | None, float | None]:
        return window_probe(self.samples(), start, end)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)

    def __enter__(self) -> CpuProbe:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
