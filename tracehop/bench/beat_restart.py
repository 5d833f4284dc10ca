"""How long celery beat takes to serve again after a SIGKILL, measured on a private stack.

    python -m tracehop.bench.beat_restart --kills 12     # writes bench/beat-restart.json, prints a table

`make chaos` kills beat once per run; this kills it N times in a row on a stack like chaos's (no load) and
splits each restart in two, from the kill:
- **spawned**: supervisord started the new process (its start time, /proc/<pid>/stat);
- **ready**: beat's readiness probe passes for that process — it has loaded its schedule and ticked
  (services/worker/beat_ready.py). This is chaos's "service back in" for beat;
- **RUNNING**: supervisord calls the new process RUNNING (its `startsecs`), which `status` also waits for;
and the CPU the new process used until ready (the marker says), with the load average at each kill: on
two shared cores a wall-clock figure alone says little.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.metrics import proc_stat
from services.worker import beat_ready
from tracehop.bench.chaos import PORT_NAMES, STACK_ENV
from tracehop.stack.config import free_ports
from tracehop.stack.processes import process_exists
from tracehop.stack.readiness import BeatProbe
from tracehop.stack.runner import LocalStack
from tracehop.stack.supervisor_client import SupervisorClient

POLL_S = 0.02
LIMIT_S = 30.0


def beat_state(supervisor: SupervisorClient) -> tuple[str, int]:
    info = supervisor.process("beat")
    return ("ABSENT", 0) if info is None else (info.state, info.pid)


def kill_once(stack: LocalStack, supervisor: SupervisorClient, probe: BeatProbe) -> dict[str, Any]:
    """SIGKILL the running beat; follow its replacement until it is ready and RUNNING."""
    state, old_pid = beat_state(supervisor)
    if state != "RUNNING" or probe.check() is not None:
        raise RuntimeError(f"beat is not ready before the kill: {state}, {probe.check()}")
    load = os.getloadavg()[0]
    # /proc start times count from boot: so does CLOCK_BOOTTIME (time.time() would mix two clocks).
    killed_at = time.clock_gettime(time.CLOCK_BOOTTIME)
    t0 = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    ready_s = running_s = None
    new_pid = 0
    # The probe passed after the killed process had gone (a zombie, or reaped) and before a new one had
    # loaded the schedule: it would have called a dead beat ready. (Before the kernel has carried out the
    # SIGKILL, the old process still runs: a pass then is true, and not counted.)
    ready_while_dead = 0
    while time.monotonic() - t0 < LIMIT_S and (ready_s is None or running_s is None):
        old_gone = not process_exists(old_pid)
        problem = probe.check()
        state, pid = beat_state(supervisor)
        now = time.monotonic() - t0
        if pid and pid != old_pid:
            new_pid = pid
        marker = beat_ready.read(stack.layout.beat_ready_marker)
        if problem is None and old_gone and (marker is None or marker.pid == old_pid):
            ready_while_dead += 1
        if problem is None and new_pid and ready_s is None and marker and marker.pid == new_pid:
            ready_s = round(now, 3)
        if state == "RUNNING" and pid and pid != old_pid and running_s is None:
            running_s = round(now, 3)
        time.sleep(POLL_S)
    marker = beat_ready.read(stack.layout.beat_ready_marker)
    stat = proc_stat.read_stat(new_pid) if new_pid else None
    spawned_s = round(stat.started_ticks / proc_stat.CLOCK_TICKS - killed_at, 2) if stat else None
    return {
        "load_average_1m": load,
        "old_pid": old_pid,
        "new_pid": new_pid,
        "spawned_s": spawned_s,  # /proc start times have a 10 ms resolution
        "ready_s": ready_s,
        "running_s": running_s,
        "cpu_until_ready_s": marker.cpu_s if marker and marker.pid == new_pid else None,
        "ready_while_dead": ready_while_dead,
    }


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": round(statistics.median(ordered), 3),
        "p90": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracehop.bench.beat_restart", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--gap", type=float, default=3.0, help="seconds between a restart and the next kill")
    parser.add_argument("--out", type=Path, default=Path("bench/beat-restart.json"))
    args = parser.parse_args(argv)
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="tracehop-beat-restart-"))
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    stack = LocalStack(root / "var", root / "logs", ports, STACK_ENV, prometheus=False, beat=True)
    console.print(f"starting a private stack in {root} …")
    stack.start(timeout=120)
    kills = []
    try:
        supervisor = SupervisorClient(stack.layout.supervisor_socket, timeout=10)
        probe = next(p for p in stack.probes() if isinstance(p, BeatProbe))
        for number in range(args.kills):
            time.sleep(args.gap)
            kills.append(kill_once(stack, supervisor, probe))
            console.print(f"kill {number + 1}: {kills[-1]}")
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    report = {
        "kills": kills,
        "summary": {
            key: summary([kill[key] for kill in kills if kill[key] is not None])
            for key in ("spawned_s", "ready_s", "running_s", "cpu_until_ready_s", "load_average_1m")
        },
        "ready_while_dead": sum(kill["ready_while_dead"] for kill in kills),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = Table(title=f"beat SIGKILLed {len(kills)} times", title_justify="left")
    for column in ("from the kill", "min", "median", "p90", "max"):
        table.add_column(column, justify="left" if column == "from the kill" else "right")
    for key, values in report["summary"].items():
        table.add_row(key, *(f"{values[k]:.2f}" for k in ("min", "median", "p90", "max")))
    console.print(table)
    console.print(f"written to {args.out}")
    return 1 if report["ready_while_dead"] else 0


if __name__ == "__main__":
    sys.exit(main())
