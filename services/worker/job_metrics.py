"""Job metrics of the worker, correct across prefork children.

Every child process writes its counters to files in PROMETHEUS_MULTIPROC_DIR; the main process serves
/metrics by summing them (prometheus_client's multiprocess mode). Counting happens in Celery's task
signals, so the tasks themselves stay free of metrics code.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery import signals
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server

from services.metrics import exemplars
from services.metrics import multiprocess as multiprocess_dir
from services.metrics.process_metrics import ProcessTreeCollector

JOBS = Counter(
    "tracehop_jobs_total", "Jobs finished, by task and final state of the attempt.", ["task", "state"]
)
JOB_DURATION_NAME = "tracehop_job_duration_seconds"
JOB_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
JOB_DURATION = Histogram(
    JOB_DURATION_NAME,
    "Time a job attempt ran in the worker, by task.",
    ["task"],
    buckets=JOB_DURATION_BUCKETS,
)
RETRIES = Counter("tracehop_job_retries_total", "Job attempts that asked to be retried, by task.", ["task"])

# Celery's states for a finished attempt, as the label values our dashboards use.
_STATE_LABELS = {"SUCCESS": "succeeded", "FAILURE": "failed", "RETRY": "retried"}
_started: dict[str, float] = {}


def start_server(port: int, addr: str) -> None:
    """Serve /metrics from the main worker process: what every child wrote, summed, and the CPU, memory
    and file descriptors of the main process and of each prefork child (multiprocess mode has no
    `process_*` metrics of its own)."""
    directory = multiprocess_dir.reset_directory()
    registry = CollectorRegistry()
    # The children's job durations, summed, with the trace ids the children recorded as exemplars
    # (written only in the OpenMetrics format, which Prometheus asks for).
    registry.register(exemplars.ExemplarCollector(multiprocess.MultiProcessCollector(None), directory))
    # The server runs in the main process (worker_init), so the tree's root is this process.
    registry.register(ProcessTreeCollector(root_role="main", child_role="child"))
    server = _bind(port, addr, registry)
    _listener.update(server=server, pid=os.getpid())
    signals.worker_process_init.connect(
        _close_inherited_listener, weak=False, dispatch_uid="tracehop.metrics_listener"
    )


# The main process's /metrics server, and which process started it.
_listener: dict[str, Any] = {"server": None, "pid": 0}

# How long a new main process waits for its /metrics port (see _bind).
BIND_WAIT_S = 15.0


def _bind(port: int, addr: str, registry: CollectorRegistry) -> WSGIServer:
    """Start the /metrics server, waiting while another process still holds the port: after the worker's
    main process is SIGKILLed, supervisord starts its successor at once, while a pool child of the old
    one may still be leaving (flushing its spans). Without the wait the successor ran on without /metrics
    — Celery logs and swallows an exception from a worker_init receiver — and was never ready again."""
    deadline = time.monotonic() + BIND_WAIT_S
    while True:
        try:
            server, _ = start_http_server(port, addr=addr, registry=registry)
            return server
        except OSError as error:
            if error.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                # Fail loudly, as a process: supervisord restarts a worker that exits, not one that
                # goes on without the port its readiness probe and Prometheus read.
                print(f"worker /metrics on {addr}:{port}: {error}", file=sys.stderr, flush=True)
                os._exit(os.EX_UNAVAILABLE)
            time.sleep(0.1)


def _close_inherited_listener(**_: object) -> None:
    """In a prefork child: close its copy of the main process's /metrics listening socket (fork copies
    every descriptor). A child outlives a SIGKILLed main process for a moment (it flushes its spans:
    services/telemetry/parent_death.py), and while it held the socket the port stayed taken and the
    kernel queued the readiness probe's connections on a socket nobody accepts from. Not in the process
    that serves (solo sends worker_process_init there too)."""
    server = _listener["server"]
    if server is not None and os.getpid() != _listener["pid"]:
        server.socket.close()


def connect_signals() -> None:
    """Count jobs in Celery's task signals (in the worker only: a process that merely sends tasks, like
    the gateway, runs none). Connect before the Celery instrumentation's own receivers: `_job_finished`
    records its exemplar while the job's CONSUMER span, which the instrumentation ends, is still current."""
    signals.task_prerun.connect(_job_started, weak=False, dispatch_uid="tracehop.job_started")
    signals.task_postrun.connect(_job_finished, weak=False, dispatch_uid="tracehop.job_finished")
    signals.task_retry.connect(_job_retried, weak=False, dispatch_uid="tracehop.job_retried")


def _job_started(task_id: str | None = None, **_: object) -> None:
    if task_id:
        _started[task_id] = time.perf_counter()


def _job_finished(task_id: str | None = None, task=None, state: str | None = None, **_: object) -> None:
    started = _started.pop(task_id or "", None)
    if task is None:
        return
    if started is not None:
        duration = time.perf_counter() - started
        JOB_DURATION.labels(task.name).observe(duration)
        # The job's CONSUMER span is still current: the Celery instrumentation ends it in its own
        # task_postrun receiver, connected (worker_process_init) after this one (connect_signals).
        exemplars.record(JOB_DURATION_NAME, {"task": task.name}, duration, JOB_DURATION_BUCKETS)
    label = _STATE_LABELS.get(state or "")
    if label:
        JOBS.labels(task.name, label).inc()


def _job_retried(sender=None, **_: object) -> None:
    if sender is not None:
        RETRIES.labels(sender.name).inc()
