"""CPU and memory of the stack's processes, read from /proc (Linux only, like the bench itself).

supervisord makes each program the leader of its own process group, so a program's processes (gunicorn
master + workers, celery main + pool children) are exactly the members of the group whose id is the
program's pid, and a service's are those of its programs' groups (the worker service has two programs,
tracehop/stack/worker_programs.py). One scan of /proc per snapshot finds them all.
"""

from __future__ import annotations

import resource
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from services.metrics import proc_stat
from tracehop.stack.worker_programs import service_of

PROC = proc_stat.PROC
CLOCK_TICKS = proc_stat.CLOCK_TICKS
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


def read_process(pid: int, with_pss: bool = False) -> ProcessSample | None:
    """One process's counters, or None when it is gone (or a zombie, which holds nothing any more)."""
    stat = proc_stat.read_stat(pid)
    if stat is None or stat.zombie:
        return None
    pss = proc_stat.pss_bytes(pid) if with_pss else None
    return ProcessSample(
        pid, stat.pgid, stat.cpu_seconds, stat.resident_bytes / MB, None if pss is None else pss / MB
    )


def service_groups(program_pids: Mapping[str, int]) -> dict[str, tuple[int, ...]]:
    """{service: its programs' process groups} from {program: pid} (a program's pid is its group's id):
    `worker` and `worker-b` are both the worker service, so its CPU and memory are their sum."""
    groups: dict[str, tuple[int, ...]] = {}
    for program, pid in program_pids.items():
        if pid:
            service = service_of(program)
            groups[service] = (*groups.get(service, ()), pid)
    return groups


def snapshot(
    groups: Mapping[str, Collection[int]], with_pss: bool = False
) -> dict[str, dict[int, ProcessSample]]:
    """{component: {pid: sample}} for every process whose group is one of `groups` ({component: pgids})."""
    by_group = {pgid: name for name, pgids in groups.items() for pgid in pgids}
    found: dict[str, dict[int, ProcessSample]] = {name: {} for name in groups}
    for pid in proc_stat.pids():
        sample = read_process(pid)
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
