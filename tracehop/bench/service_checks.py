"""`make chaos`: what "the service answers again" means for each program it kills.

A program's readiness probe (tracehop/stack/readiness.py) says whether a process serves; after a kill,
chaos also needs to know when the SERVICE answers again, which may be long before the killed process is
replaced:

- gateway, users, the trace store, Redis: their readiness probe itself (an HTTP request or a PING to
  the port), whichever process answers it — an orphaned gunicorn worker, or the new master's;
- the worker service (programs `worker` and `worker-b`): a job completes. A `heartbeat` job is published
  by name, as beat publishes it, and the service answers once its result is stored, whichever worker
  node ran it. A metrics endpoint answering says nothing about consuming;
- beat: only beat publishes the schedule, so its service is back when a new beat process is.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import redis
from celery import Celery

from tracehop.stack.worker_programs import PROGRAM_NAMES

Check = Callable[[], "str | None"]

PROBE_TASK = "heartbeat"


class JobRoundTrip:
    """The worker service answers when a job published now completes within `timeout_s`."""

    def __init__(self, broker_url: str, result_url: str, queue: str, timeout_s: float = 1.0) -> None:
        # A client of its own (not the worker's app, whose import sets up tracing and signal receivers):
        # publishing by name needs only the broker and the queue.
        self.app = Celery("tracehop-chaos-probe", broker=broker_url, set_as_current=False)
        self.app.conf.update(broker_connection_retry_on_startup=True, task_default_queue=queue)
        self.results = redis.Redis.from_url(result_url, socket_timeout=2, socket_connect_timeout=2)
        self.queue = queue
        self.timeout_s = timeout_s

    def check(self) -> str | None:
        job_id = f"chaos-probe-{uuid.uuid4()}"
        deadline = time.monotonic() + self.timeout_s
        try:
            self.app.send_task(PROBE_TASK, task_id=job_id, queue=self.queue)
            while time.monotonic() < deadline:
                raw = self.results.get(f"celery-task-meta-{job_id}")
                if raw is not None and json.loads(raw).get("status") == "SUCCESS":
                    return None
                time.sleep(0.02)
        except Exception as error:  # the broker or Redis away: the service does not answer, say why
            return f"{type(error).__name__}: {error}"
        return f"probe job not done within {self.timeout_s:g} s"

    def close(self) -> None:
        self.results.close()


def service_check(program: str, readiness: Check, jobs: JobRoundTrip) -> Check | None:
    """How chaos asks whether `program`'s service answers; None when only a new process can (beat)."""
    if program in PROGRAM_NAMES:
        return jobs.check
    if program == "beat":
        return None
    return readiness
