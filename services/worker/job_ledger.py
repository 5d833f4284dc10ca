"""The ledger of accepted jobs, and the reconciler that publishes again a job that never started.

Why: kombu's Redis transport takes a message off the queue (BRPOP) before it records it as unacknowledged.
A worker killed between the two loses the message for good — no unacked entry, so no visibility-timeout
sweep can bring it back — although the client was told 201 and a job id. Late acknowledgement protects
a job only once it is recorded; this protects it from the moment it is published.

How:
- every publish of one of our jobs (gateway, worker, beat) puts the message on the ledger BEFORE it is
  published (ledger_publish.py: a job whose record fails is not published):
  `tracehop:jobs:message:<id>` and a deadline in `tracehop:jobs:waiting` (a sorted set): its ETA if it has
  one, plus TRACEHOP_JOB_START_DEADLINE_S. A publish by another Celery app in the process (a library's,
  services/worker/named_tasks.py) is recorded after it, in Celery's `after_task_publish` signal;
- a job that starts claims its id with a lease (job_claims.py): it stays on the ledger, due when the lease
  would run out (each renewal moves that), and leaves it when it finishes;
- `reconcile_once`, run every TRACEHOP_RECONCILE_INTERVAL_S by each gateway process, takes the jobs past
  their deadline — never started, or their holder died — (one atomic script: a job goes to one
  reconciler), moves each deadline further (doubling per attempt, at most an hour) and publishes the
  SAME message again: same task id, same arguments, the header `tracehop_republished`, and a trace
  context whose parent is the original publish — the job's trace stays one trace and shows a
  `republish <task>` span between the publish and the run.

A job merely slow to start (a long queue) is published twice; the copy that starts second does nothing
(jobs are idempotent by id). Costs: one pipelined SET + ZADD per publish, before it; one ZRANGEBYSCORE per
interval per gateway process; a message's size in Redis while it waits. The ledger lives in the result
backend's Redis, so it works the same with RabbitMQ as the broker.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from datetime import datetime
from typing import Any

import redis
from celery import Celery, signals
from kombu.utils.json import dumps, loads
from loguru import logger
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from services.web import settings
from services.worker.job_claims import LEDGER_KEY, LEDGER_MESSAGE_PREFIX, REPUBLISHED_HEADER, IdempotentTask

MAX_BACKOFF_S = 3600
TAKE_LIMIT = 100
tracer = trace.get_tracer(__name__)
# True while a publish that put its message on the ledger first runs (ledger_publish.py): its
# after_task_publish signal must not write it a second time.
RECORDED_BEFORE_PUBLISH: ContextVar[bool] = ContextVar("tracehop_recorded_before_publish", default=False)
REPUBLISHED = Counter(
    "tracehop_jobs_republished_total",
    "Jobs published again because they had not started by their deadline.",
    ["task"],
)

# KEYS: ledger; ARGV: now, limit. The due job ids, each pushed past the deadline by a placeholder
# (the caller sets the real one), so a second reconciler running at the same moment does not take them.
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[1] + 60, id) end
return due
"""


def start_deadline_s() -> float:
    return settings.env_float("TRACEHOP_JOB_START_DEADLINE_S", 120.0)


def reconcile_interval_s() -> float:
    """0 switches the reconciler off."""
    return settings.env_float("TRACEHOP_RECONCILE_INTERVAL_S", 10.0)


class JobLedger:
    def __init__(self, client: redis.Redis, deadline_s: float) -> None:
        self._redis = client
        self._deadline_s = deadline_s
        self._take_due = client.register_script(_TAKE_DUE)

    def record(
        self, headers: dict[str, Any], body: Any, exchange: str, routing_key: str, wait_s: float | None = None
    ) -> None:
        """Remember a published message until its job starts; due after `wait_s` (default: the start
        deadline) counted from its ETA or now."""
        job_id = headers["id"]
        entry = {"headers": headers, "body": body, "exchange": exchange, "routing_key": routing_key}
        deadline = _start_time(headers.get("eta")) + (self._deadline_s if wait_s is None else wait_s)
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(LEDGER_MESSAGE_PREFIX + job_id, dumps(entry), ex=int(self._deadline_s) + 2 * MAX_BACKOFF_S)
        pipe.zadd(LEDGER_KEY, {job_id: deadline})
        pipe.execute()

    def take_due(self, now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The jobs past their deadline with their recorded messages (a minute is theirs to publish)."""
        now = time.time() if now is None else now
        due = [_text(job_id) for job_id in self._take_due(keys=[LEDGER_KEY], args=[now, TAKE_LIMIT])]
        taken = []
        for job_id in due:
            raw = self._redis.get(LEDGER_MESSAGE_PREFIX + job_id)
            if raw is None:  # finished meanwhile, or expired
                self._redis.zrem(LEDGER_KEY, job_id)
                continue
            taken.append((job_id, loads(raw)))
        return taken

    def backoff_s(self, attempt: int) -> float:
        """How long a copy published for the `attempt`-th time may wait before the next one."""
        return min(MAX_BACKOFF_S, self._deadline_s * 2**attempt)

    def waiting(self) -> int:
        return int(self._redis.zcard(LEDGER_KEY))


def republish(app: Celery, ledger: JobLedger, job_id: str, entry: dict[str, Any]) -> None:
    """Publish the recorded message again, in the job's own trace (module docstring)."""
    headers = dict(entry["headers"])
    attempt = int(headers.get(REPUBLISHED_HEADER) or 0) + 1
    task = headers.get("task", "?")
    parent = propagate.extract(headers)  # the original publish's context, from the message headers
    attributes = {
        "messaging.message.id": job_id,
        "job.republish_attempt": attempt,
        "job.republish_reason": "not started by its deadline",
    }
    with tracer.start_as_current_span(
        f"republish {task}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
    ):
        for name in ("traceparent", "tracestate"):
            headers.pop(name, None)
        propagate.inject(headers)
        headers[REPUBLISHED_HEADER] = attempt
        # The copy is the message to bring back next time (its attempt number goes up): on the ledger
        # before it is published, as every publish (ledger_publish.py).
        ledger.record(
            headers, entry["body"], entry["exchange"], entry["routing_key"], ledger.backoff_s(attempt)
        )
        with app.producer_or_acquire() as producer:
            queue = app.amqp.queues.get(entry["routing_key"])
            producer.publish(
                entry["body"],
                exchange=entry["exchange"],
                routing_key=entry["routing_key"],
                headers=headers,
                serializer="json",
                correlation_id=job_id,
                delivery_mode=2,
                declare=[queue] if queue is not None else None,
                retry=True,
                retry_policy=app.conf.task_publish_retry_policy,
            )
    REPUBLISHED.labels(task=task).inc()
    logger.warning(
        "job published again: not started by its deadline", job_id=job_id, task=task, attempt=attempt
    )


def reconcile_once(app: Celery, ledger: JobLedger) -> int:
    """Publish again every job past its deadline; how many were."""
    count = 0
    for job_id, entry in ledger.take_due():
        try:
            republish(app, ledger, job_id, entry)
            count += 1
        except Exception as exc:
            logger.warning("publishing a job again failed", job_id=job_id, error_type=type(exc).__name__)
    return count


def connect_recording(app: Celery) -> None:
    """Record, after the publish, what another Celery app in this process publishes of our jobs (this app's
    own publishes are on the ledger before they leave: ledger_publish.py)."""

    @signals.after_task_publish.connect(weak=False)
    def _record(
        sender: str | None = None,
        body: Any = None,
        headers: dict | None = None,
        exchange: str = "",
        routing_key: str = "",
        **_: Any,
    ) -> None:
        if RECORDED_BEFORE_PUBLISH.get():
            return
        task = app.tasks.get(sender or "")
        if headers is None or not isinstance(task, IdempotentTask):
            return
        try:
            ledger_for(app).record(headers, body, exchange, routing_key)
        except redis.RedisError as exc:
            # The job is in the broker; only its protection against a lost delivery is missing.
            logger.warning(
                "job not recorded in the ledger", job_id=headers.get("id"), error_type=type(exc).__name__
            )


_ledgers: dict[str, JobLedger] = {}


def ledger_for(app: Celery) -> JobLedger:
    """This process's ledger for the app's result backend (one per URL: tests point the app at another
    Redis between runs). redis-py's pool reconnects after a fork by itself."""
    url = app.conf.result_backend
    ledger = _ledgers.get(url)
    if ledger is None:
        ledger = _ledgers[url] = process_ledger(app)
    return ledger


def process_ledger(app: Celery) -> JobLedger:
    client = redis.Redis.from_url(app.conf.result_backend, socket_timeout=2, socket_connect_timeout=2)
    return JobLedger(client, start_deadline_s())


def start_reconciler(app: Celery) -> threading.Thread | None:
    """A daemon thread reconciling every TRACEHOP_RECONCILE_INTERVAL_S (none when it is 0)."""
    interval = reconcile_interval_s()
    if interval <= 0:
        return None
    ledger = process_ledger(app)

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                reconcile_once(app, ledger)
            except Exception as exc:
                logger.warning("reconciling jobs failed", error_type=type(exc).__name__)

    thread = threading.Thread(target=loop, name="job-reconciler", daemon=True)
    thread.start()
    return thread


def _start_time(eta: str | None) -> float:
    if eta:
        try:
            return max(time.time(), datetime.fromisoformat(eta).timestamp())
        except ValueError:
            pass
    return time.time()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
