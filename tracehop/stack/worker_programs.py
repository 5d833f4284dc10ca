"""The worker service as two supervised programs, so that it goes on consuming while one is replaced.

A SIGKILLed program is started again cold: supervisord restarts it at once, but importing the worker's
Celery app alone took 2.4-3.6 s on the loaded 2-core development machine, and no import tuning makes a
cold start reliably shorter than the 2 s the service has to be back in (docs/reliability.md). So the
stack runs the worker service as two Celery nodes, `worker` and `worker-b`, each a program of its own
with half the pool (TRACEHOP_WORKER_CONCURRENCY is the service's total, so the bench's workload and the
pool size do not change), both consuming the same queue: while one is restarted the other runs the jobs.

Each program has its own node name (`-n worker-b@%h`: two nodes of one name on one host would be
indistinguishable to `celery inspect`), its own /metrics port and its own PROMETHEUS_MULTIPROC_DIR (a
worker empties its directory when it starts: a shared one would lose the other program's counts), and
Prometheus scrapes both. Both write the service's log, logs/worker.log, as the pool children of one
program already do (one write() per line in append mode), so `make logs`, Loki and Alloy see one service.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.web import settings

CONCURRENCY_VARIABLE = "TRACEHOP_WORKER_CONCURRENCY"
SERVICE = "worker"
# The programs, in start order; a pool of one cannot be halved, so it runs as the first alone.
PROGRAM_NAMES = ("worker", "worker-b")


@dataclass(frozen=True)
class WorkerProgram:
    """One Celery node of the worker service."""

    name: str
    concurrency: int

    @property
    def node_name(self) -> str:
        """Celery's `-n`: `%h` is expanded by Celery to the host name."""
        return f"{self.name}@%h"


def worker_concurrency(environ: Mapping[str, str]) -> int:
    """TRACEHOP_WORKER_CONCURRENCY (the service's total pool), checked like the services check it."""
    raw = environ.get(CONCURRENCY_VARIABLE, "").strip()
    if not raw:
        return settings.DEFAULT_WORKER_CONCURRENCY
    try:
        total = int(raw)
    except ValueError:
        raise ValueError(f"{CONCURRENCY_VARIABLE}={raw!r}: it must be a whole number of processes") from None
    if total < 1:
        raise ValueError(f"{CONCURRENCY_VARIABLE}={raw!r}: the worker service needs at least one process")
    return total


def split_pool(total: int) -> list[WorkerProgram]:
    """The worker programs for a total pool of `total`: two halves (the first takes an odd one), or a single
    program for a pool of one (tests that need exactly one consumer ask for that)."""
    if total < 1:
        raise ValueError(f"a worker pool of {total} processes")
    if total == 1:
        return [WorkerProgram(PROGRAM_NAMES[0], 1)]
    first = (total + 1) // 2
    return [WorkerProgram(PROGRAM_NAMES[0], first), WorkerProgram(PROGRAM_NAMES[1], total - first)]


def service_of(program: str) -> str:
    """The service a supervised program belongs to: both worker programs are the `worker` service."""
    return SERVICE if program in PROGRAM_NAMES else program
