"""Resource usage per process (CPU seconds, resident memory, open file descriptors), read from /proc.

prometheus_client's multiprocess mode, which gunicorn workers and Celery's prefork children need for
correct counters, does not expose the usual `process_*` metrics: each would describe only the process
that happened to answer the scrape. This collector describes a whole process tree instead, whichever
process answers: a root (gunicorn's master, Celery's main process) and its direct children (gunicorn
workers, prefork children), each as its own series:

    process_cpu_seconds_total{pid="4242",role="worker"} 1.93
    process_resident_memory_bytes{pid="4242",role="worker"} 5.1e+07
    process_open_fds{pid="4242",role="worker"} 17

`sum by (job) (process_resident_memory_bytes)` is then a service's whole footprint. A restarted worker
gets a new pid: its series simply stops, as a process's metrics do anyway.

Linux only: everything comes from /proc. Elsewhere (macOS) the collector reports nothing rather than fail
the scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from services.metrics import proc_stat


@dataclass(frozen=True)
class ProcessUsage:
    pid: int
    ppid: int
    cpu_seconds: float  # user + system time
    resident_bytes: int
    open_fds: int | None  # None when /proc/<pid>/fd is not readable (another user's process)


def read_usage(pid: int) -> ProcessUsage | None:
    """One process's usage, or None if it is gone (or this is not Linux)."""
    stat = proc_stat.read_stat(pid)
    if stat is None:
        return None
    return ProcessUsage(pid, stat.ppid, stat.cpu_seconds, stat.resident_bytes, proc_stat.open_fds(pid))


def children_of(parent: int) -> list[ProcessUsage]:
    """The usage of every direct child of `parent`.

    A scan of /proc (a few hundred small reads, ~1 ms): `/proc/<pid>/task/<tid>/children` would be
    cheaper but exists only on kernels built with CONFIG_PROC_CHILDREN, which many are not.
    """
    children = []
    for pid in proc_stat.pids():
        stat = proc_stat.read_stat(pid)
        if stat is not None and stat.ppid == parent:
            children.append(
                ProcessUsage(pid, parent, stat.cpu_seconds, stat.resident_bytes, proc_stat.open_fds(pid))
            )
    return children


class ProcessTreeCollector:
    """A prometheus_client collector for a root process and its direct children.

    `root_pid` is called at every scrape: a gunicorn worker passes `os.getppid` (its master), so
    whichever worker answers, the tree is the same.
    """

    def __init__(
        self,
        root_pid: Callable[[], int] = os.getpid,
        root_role: str = "main",
        child_role: str = "child",
    ) -> None:
        self._root_pid, self._root_role, self._child_role = root_pid, root_role, child_role

    def collect(self) -> Iterator[Metric]:
        labels = ["pid", "role"]
        cpu = CounterMetricFamily(
            "process_cpu_seconds", "Total user and system CPU time spent in seconds.", labels=labels
        )
        memory = GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.", labels=labels
        )
        fds = GaugeMetricFamily("process_open_fds", "Number of open file descriptors.", labels=labels)
        # No special case for pid 1: in a container gunicorn's master IS pid 1. (An orphaned gunicorn
        # worker, whose parent becomes 1 on a host, notices and exits within a second.)
        root = self._root_pid()
        root_usage = read_usage(root)
        tree = [(root_usage, self._root_role)] if root_usage else []
        tree += [(child, self._child_role) for child in children_of(root)]
        for usage, role in tree:
            values = [str(usage.pid), role]
            cpu.add_metric(values, usage.cpu_seconds)
            memory.add_metric(values, usage.resident_bytes)
            if usage.open_fds is not None:
                fds.add_metric(values, usage.open_fds)
        yield cpu
        yield memory
        yield fds
