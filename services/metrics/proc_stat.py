"""The one reader of Linux's /proc/<pid> files: a process's state, parent, group, CPU time and memory.

Used by the services' process metrics (process_metrics.py) and by the tooling: `tracehop down` proving its
processes gone, the bench measuring each component. Standard library only. Elsewhere than Linux there is
no /proc: `read_stat` answers None and `pids` nothing, and each caller says what that means for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie: exited, holds nothing, waits to be reaped), ...
    ppid: int
    pgid: int
    cpu_seconds: float  # user + system since the process started
    resident_bytes: int
    # When the process started, in clock ticks since boot (field 22): with the pid, it names one process
    # even after the system gives the pid to another.
    started_ticks: int = 0

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def parse_stat(pid: int, text: str) -> ProcStat:
    """The text of /proc/<pid>/stat, parsed."""
    # The command name (field 2) is in parentheses and may itself contain spaces and ')': split after the
    # LAST ')'. Fields then start at field 3 (state): ppid is field 4, pgrp 5, utime 14, stime 15,
    # starttime 22, rss 24.
    fields = text[text.rindex(")") + 2 :].split()
    return ProcStat(
        pid=pid,
        state=fields[0],
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        resident_bytes=int(fields[21]) * PAGE_BYTES,
        started_ticks=int(fields[19]),
    )


def read_stat(pid: int) -> ProcStat | None:
    """The process's /proc/<pid>/stat, or None when it is gone (or there is no /proc)."""
    try:
        text = (PROC / str(pid) / "stat").read_bytes().decode("ascii", "replace")
    except OSError:
        return None
    return parse_stat(pid, text)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process that must be alive (ProcessLookupError when it is gone)."""
    stat = read_stat(pid)
    if stat is None:
        raise ProcessLookupError(f"process {pid} is gone")
    return stat.cpu_seconds


def pids() -> list[int]:
    """Every process id in /proc (a few hundred entries on a busy host; [] without /proc)."""
    try:
        return [int(name) for name in os.listdir(PROC) if name.isdigit()]
    except OSError:
        return []


def open_fds(pid: int) -> int | None:
    """How many file descriptors the process has open (None when /proc/<pid>/fd is not readable)."""
    try:
        return len(os.listdir(PROC / str(pid) / "fd"))
    except OSError:
        return None


def command_line(pid: int) -> str:
    """The command line of `pid` ("" when unknown or gone)."""
    try:
        return (PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared, forked pages split between the sharers), or None when unreadable."""
    try:
        return parse_pss_bytes((PROC / str(pid) / "smaps_rollup").read_text())
    except OSError:
        return None


def parse_pss_bytes(smaps_rollup: str) -> int | None:
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return None
