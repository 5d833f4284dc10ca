"""`make chaos`: what "the service answers again" means for each program it kills.

A program's readiness probe (tracehop/stack/readiness.py) says whether a process serves; after a kill,
chaos also needs to know when the SERVICE answers again, which may be long before the killed process is
replaced:

- gateway, users, the trace store, Redis: their readiness probe itself (an HTTP request or a PING to
  the port), whichever process answers it — an orphaned gunicorn worker, or the new master's;
- the worker service (programs `worker` and `worker-b`): jobs complete (`JobsComplete`). A metrics page
  answering says nothing about consuming;
- beat: its readiness probe, which passes only once the process supervisord runs now has loaded the
  schedule and ticked (its ready marker names its pid: services/worker/beat_ready.py). Only beat publishes
  the schedule, so no other process can answer for it; and since the probe does not wait for supervisord
  to call the new process RUNNING, the figure is beat's own restart, not supervisord's `startsecs`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence

import redis
import requests
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from tracehop.stack.worker_programs import PROGRAM_NAMES

Check = Callable[[], "str | None"]

PROBE_TASK = "heartbeat"
JOBS_METRIC = "tracehop_jobs_total"


class JobsComplete:
    """The worker service answers when, within `timeout_s`, it completes a job: a `heartbeat` published
    now by name (as beat publishes it), or any other job — a worker node's `tracehop_jobs_total` rose.

    The probe job alone would measure the queue too: under a load one node cannot keep up with alone, the
    probe waits behind the backlog while the service runs jobs all along. The counters alone would see an
    idle service as down."""

    def __init__(
        self,
        broker_url: str,
        result_url: str,
        queue: str,
        metrics_urls: Sequence[str],
        timeout_s: float = 1.0,
    ) -> None:
        # A client of its own (not the worker's app, whose import sets up tracing and signal receivers):
        # publishing by name needs only the broker and the queue.
        self.app = Celery("tracehop-chaos-probe", broker=broker_url, set_as_current=False)
        self.app.conf.update(broker_connection_retry_on_startup=True, task_default_queue=queue)
        self.results = redis.Redis.from_url(result_url, socket_timeout=2, socket_connect_timeout=2)
        self.http = requests.Session()
        self.http.trust_env = False
        self.queue = queue
        self.metrics_urls = list(metrics_urls)
        self.timeout_s = timeout_s

    def check(self) -> str | None:
        job_id = f"chaos-probe-{uuid.uuid4()}"
        deadline = time.monotonic() + self.timeout_s
        before = self.jobs_counted()
        try:
            self.app.send_task(PROBE_TASK, task_id=job_id, queue=self.queue)
            while time.monotonic() < deadline:
                raw = self.results.get(f"celery-task-meta-{job_id}")
                if raw is not None and json.loads(raw).get("status") == "SUCCESS":
                    return None
                if progressed(before, self.jobs_counted()):
                    return None
                time.sleep(0.05)
        except Exception as error:  # the broker or Redis away: the service does not answer, say why
            return f"{type(error).__name__}: {error}"
        return f"no job completed within {self.timeout_s:g} s"

    def jobs_counted(self) -> dict[str, float]:
        """{metrics URL: jobs it counted} for every worker node that answers now."""
        counted = {}
        for url in self.metrics_urls:
            try:
                text = self.http.get(url, timeout=0.5).text
            except requests.RequestException:
                continue  # a node that is down completes nothing
            counted[url] = jobs_total(text)
        return counted

    def close(self) -> None:
        self.results.close()
        self.http.close()


def jobs_total(metrics_text: str) -> float:
    """Every job a node counted (succeeded, failed, retried): each is a job it completed a run of."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == JOBS_METRIC
    )


def progressed(before: dict[str, float], after: dict[str, float]) -> bool:
    """A node counted more jobs than before (a node that was down before counts from zero: it restarted
    and ran jobs since)."""
    return any(count > before.get(url, 0.0) for url, count in after.items())


def service_check(program: str, readiness: Check, jobs: JobsComplete) -> Check:
    """How chaos asks whether `program`'s service answers."""
    if program in PROGRAM_NAMES:
        return jobs.check
    return readiness
