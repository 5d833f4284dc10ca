"""CPU and memory of the stack's processes, read from /proc (Linux only, like the bench itself).

supervisord makes each program the leader of its own process group, so a service's processes (gunicorn
master + workers, celery main + pool children) are exactly the members of the group whose id is the
program's pid. One scan of /proc per snapshot finds them all.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
MB = 1024 * 1024


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    pgid: int
    cpu_s: float  # user + system since the process started
    rss_mb: float
    pss_mb: float | None  # proportional set size: shared (forked) pages split between the sharers


@dataclass(frozen=True)
class ServiceUsage:
    """What one component used during a window."""

    cpu_s: float
    rss_mb: float  # sum over its processes at the end of the window
    pss_mb: float | None
    processes: int
    rss_mb_max_process: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "cpu_s": round(self.cpu_s, 3),
            "rss_mb": round(self.rss_mb, 1),
            "pss_mb": None if self.pss_mb is None else round(self.pss_mb, 1),
            "processes": self.processes,
            "rss_mb_max_process": round(self.rss_mb_max_process, 1),
        }


def parse_stat(text: str) -> tuple[int, float, float]:
    """(pgid, cpu seconds, rss MB) from the text of /proc/<pid>/stat."""
    # The command name is in parentheses and may contain spaces or parentheses itself.
    fields = text[text.rindex(")") + 2 :].split()
    # After the name: state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
    # ... rss is field 24 of the full line, i.e. index 21 here.
    pgid = int(fields[2])
    cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    rss_mb = int(fields[21]) * PAGE_BYTES / MB
    return pgid, cpu_s, rss_mb


def parse_pss_mb(smaps_rollup: str) -> float | None:
    for line in smaps_rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return None


def read_process(pid: int, with_pss: bool = False) -> ProcessSample | None:
    """One process's counters, or None when it is gone (or a zombie, which holds nothing any more)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    if text[text.rindex(")") + 2] == "Z":
        return None
    pgid, cpu_s, rss_mb = parse_stat(text)
    pss_mb = None
    if with_pss:
        try:
            pss_mb = parse_pss_mb((PROC / str(pid) / "smaps_rollup").read_text())
        except OSError:
            pss_mb = None
    return ProcessSample(pid, pgid, cpu_s, rss_mb, pss_mb)


def snapshot(groups: Mapping[str, int], with_pss: bool = False) -> dict[str, dict[int, ProcessSample]]:
    """{component: {pid: sample}} for every process whose group is one of `groups` ({component: pgid})."""
    by_group = {pgid: name for name, pgid in groups.items()}
    found: dict[str, dict[int, ProcessSample]] = {name: {} for name in groups}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        sample = read_process(int(entry.name))
        if sample is None or sample.pgid not in by_group:
            continue
        if with_pss:
            # smaps_rollup is costlier than stat: read it only for the processes we keep.
            sample = read_process(sample.pid, with_pss=True) or sample
        found[by_group[sample.pgid]][sample.pid] = sample
    return found


def usage_between(before: Mapping[int, ProcessSample], after: Mapping[int, ProcessSample]) -> ServiceUsage:
    """CPU used between two snapshots of one component, memory as at the second.

    A process that appeared in between counts from zero; one that exited in between is lost (its CPU
    cannot be read any more), which the bench avoids by never restarting processes mid-run.
    """
    cpu = sum(sample.cpu_s - (before[pid].cpu_s if pid in before else 0.0) for pid, sample in after.items())
    rss = [sample.rss_mb for sample in after.values()]
    pss = [sample.pss_mb for sample in after.values()]
    return ServiceUsage(
        cpu_s=max(0.0, cpu),
        rss_mb=sum(rss),
        pss_mb=sum(p for p in pss if p is not None) if any(p is not None for p in pss) else None,
        processes=len(after),
        rss_mb_max_process=max(rss, default=0.0),
    )


@dataclass(frozen=True)
class MachineCpu:
    busy_s: float  # all cores, time spent running something in this machine (not idle, iowait, steal)
    steal_s: float  # time the hypervisor gave our virtual CPUs to someone else


def parse_proc_stat(text: str) -> MachineCpu:
    fields = [int(value) for value in text.splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq = fields[:7]
    steal = fields[7] if len(fields) > 7 else 0
    busy = user + nice + system + irq + softirq
    return MachineCpu(busy_s=busy / CLOCK_TICKS, steal_s=steal / CLOCK_TICKS)


def machine_cpu() -> MachineCpu:
    return parse_proc_stat((PROC / "stat").read_text())


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = (PROC / "loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


def own_cpu_s() -> float:
    """CPU of this process (the built-in load generator's threads live here)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_model() -> str:
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
