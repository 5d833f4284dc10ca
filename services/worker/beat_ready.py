"""celery beat's readiness marker: written by a beat process once its scheduler has loaded the schedule and
ticked, read by whoever asks whether beat serves (`make status`, `make chaos`, the container healthcheck).

beat answers no request, and its schedule file says nothing: a beat killed a moment ago leaves it behind.
The marker names the process that wrote it — its pid and its start time (the pair names one process even
after the system hands the pid to another) — so a marker left by a killed beat is told apart from the
running beat's:

    <schedule file>.ready   {"pid": 4242, "started_ticks": 918273, "ready_at": 1764466000.1, "cpu_s": 0.93}

    python -m services.worker.beat_ready <schedule file>   # exit 0 when ready, else 1 and why (healthcheck)

Standard library only: the probes that read it must not import Celery.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from services.metrics import proc_stat

MARKER_SUFFIX = ".ready"


@dataclass(frozen=True)
class BeatReady:
    pid: int
    started_ticks: int  # the process's start time, clock ticks since boot (/proc/<pid>/stat field 22)
    ready_at: float  # wall-clock time of its scheduler's first tick
    cpu_s: float  # CPU the process had used by then (what a restart costs before beat serves)


def marker_path(schedule_filename: str | os.PathLike[str]) -> Path:
    """Beside the schedule (dbm may add `.db` to the schedule's own name, never `.ready`)."""
    return Path(f"{os.fspath(schedule_filename)}{MARKER_SUFFIX}")


def this_process() -> BeatReady:
    pid = os.getpid()
    stat = proc_stat.read_stat(pid)
    return BeatReady(
        pid=pid,
        started_ticks=stat.started_ticks if stat else 0,
        ready_at=time.time(),
        cpu_s=round(time.process_time(), 3),
    )


def write(path: Path, ready: BeatReady) -> None:
    """Atomically (a reader sees the old marker or the new one, never half a file)."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(asdict(ready), file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read(path: Path) -> BeatReady | None:
    try:
        return BeatReady(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def problem(path: Path, running_pid: int | None) -> str | None:
    """None when the beat process `running_pid` (the one its supervisor runs now; None: whichever wrote the
    marker) has loaded its schedule and is alive, else why not, for a person."""
    ready = read(path)
    if ready is None:
        return "no beat has loaded its schedule yet (no ready marker)"
    if running_pid is not None and ready.pid != running_pid:
        return f"beat pid {running_pid} has not loaded its schedule yet (the marker is pid {ready.pid}'s)"
    stat = proc_stat.read_stat(ready.pid)
    if stat is None or stat.zombie:
        return f"beat pid {ready.pid}, which wrote the marker, has exited"
    if ready.started_ticks and stat.started_ticks != ready.started_ticks:
        return f"the marker is from an earlier process that had pid {ready.pid}"
    if stat.state == "T":
        return f"beat pid {ready.pid} is stopped (SIGSTOP)"
    return None


def main(argv: list[str] | None = None) -> int:
    """The container's healthcheck: there, beat is the only process, so the marker's writer must be alive."""
    (schedule,) = sys.argv[1:] if argv is None else argv
    reason = problem(marker_path(schedule), None)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
