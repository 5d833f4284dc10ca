"""A job is on the ledger before its message is published (services/worker/ledger_publish.py), through the
gateway's own queueing code, against real Redis-protocol servers: the broker (the session's valkey) and a
separate ledger Redis (a valkey with the stack's append-only settings) that the test kills.

The window that lost a job in `make test`'s chaos run: the publish reached the broker, a dying worker's
read took the message, and Redis died before the ledger write that followed the publish. Here the broker
holds the publish's LPUSH (`CLIENT PAUSE WRITE`) while the test SIGKILLs the ledger's Redis, then lets it
through and takes the message away as the dying worker did. Recording after the publish (as before) leaves
nothing to bring the job back: the test fails there (checked).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from services.gateway.job_queue import JobQueue, QueueUnavailable
from services.telemetry import setup as telemetry
from services.worker.celery_app import app as celery_app
from services.worker.job_claims import LEDGER_KEY, LEDGER_MESSAGE_PREFIX, REPUBLISHED_HEADER
from services.worker.job_ledger import JobLedger, reconcile_once, start_deadline_s
from tests.valkey_process import AofValkey


@pytest.fixture
def ledger_redis(tmp_path, monkeypatch) -> Iterator[AofValkey]:
    """The ledger's own Redis (the result backend's), apart from the broker: the test kills it alone."""
    server = AofValkey(tmp_path)
    server.start()
    # Celery keeps one result backend per thread, made from the URL on first use: this thread's stays on
    # the session's Redis (later tests use it); a thread started in the test makes its own on this one.
    assert celery_app.backend is not None
    monkeypatch.setattr(celery_app.conf, "result_backend", server.url)
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.kill()
            server.process.wait()


def test_a_job_whose_ledger_record_fails_is_not_published(broker, ledger_redis, spans):
    telemetry.instrument([CeleryInstrumentor()])
    # The ledger's Redis refuses writes (as without enough replicas); it answers everything else, and the
    # broker is up.
    ledger_redis.client().config_set("min-replicas-to-write", 1)
    with trace.get_tracer("test").start_as_current_span("request") as request_span:
        with pytest.raises(QueueUnavailable):
            JobQueue(celery_app.conf.broker_url).queue_welcome_email(7, "ada@example.org")
        # The failed publish's PRODUCER span is no longer current: the rest of the request (and the next
        # request on this thread) is not inside it.
        assert trace.get_current_span() is request_span
    assert broker.llen("celery") == 0  # nothing reached the broker: the gateway answers 503
    (producer,) = [s for s in spans.get_finished_spans() if s.name == "apply_async/send_welcome_email"]
    assert producer.status.status_code == trace.StatusCode.ERROR
    assert producer.parent.span_id == request_span.get_span_context().span_id


def test_a_job_published_as_the_ledgers_redis_dies_comes_back_in_its_own_trace(broker, ledger_redis, spans):
    telemetry.instrument([CeleryInstrumentor()])  # the PRODUCER span and its context, as in the gateway
    job_id = str(uuid.uuid4())
    published: dict[str, object] = {}

    def publish() -> None:  # the gateway's request
        with trace.get_tracer("test").start_as_current_span("request") as span:
            published["trace_id"] = f"{span.get_span_context().trace_id:032x}"
            queue = JobQueue(celery_app.conf.broker_url)
            published["job_id"] = queue.queue_welcome_email(7, "ada@example.org", job_id=job_id)

    broker.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")  # the publish's LPUSH waits in the broker
    request = threading.Thread(target=publish)
    try:
        request.start()
        ledger = ledger_redis.client()
        deadline = time.monotonic() + 3  # recording after the publish never gets here: it waits on the LPUSH
        while ledger.zscore(LEDGER_KEY, job_id) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        ledger_redis.process.send_signal(signal.SIGKILL)  # Redis dies before the publish is through
        ledger_redis.process.wait()
    finally:
        broker.execute_command("CLIENT", "UNPAUSE")
    request.join(timeout=30)
    assert published.get("job_id") == job_id  # the publish succeeded: the client gets 201 and this id
    (original,) = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    broker.delete("celery")  # what the dying worker's read took with it

    ledger_redis.start()  # back from its append-only file
    store = ledger_redis.client()
    assert store.get(LEDGER_MESSAGE_PREFIX + job_id) is not None, "the job is not on the ledger: lost"
    store.zadd(LEDGER_KEY, {job_id: 0})  # its start deadline has passed
    assert reconcile_once(celery_app, JobLedger(store, deadline_s=10)) == 1

    (copy,) = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    assert copy["headers"]["id"] == job_id and copy["headers"][REPUBLISHED_HEADER] == 1
    assert copy["body"] == original["body"]  # the same job, the same arguments
    # In the job's own trace, under the original publish (whose context the ledger kept).
    (republish,) = [s for s in spans.get_finished_spans() if s.name == "republish send_welcome_email"]
    assert copy["headers"]["traceparent"].split("-")[1] == published["trace_id"]
    assert f"{republish.parent.span_id:016x}" == original["headers"]["traceparent"].split("-")[2]


def test_a_publish_by_another_app_is_recorded_after_it(broker, valkey_url):
    """A second Celery app in the process (a library's: services/worker/named_tasks.py) publishes without
    our publish path; the after_task_publish signal still puts its job on the ledger."""
    from services.worker.named_tasks import REMINDER_TASK, notifications

    store = redis.Redis.from_url(valkey_url)
    job_id = notifications.send_task(REMINDER_TASK, args=["note"]).id
    assert store.get(LEDGER_MESSAGE_PREFIX + job_id) is not None


def test_a_job_with_an_eta_is_due_from_its_eta(broker, valkey_url):
    store = redis.Redis.from_url(valkey_url)
    job_id = JobQueue(valkey_url).queue_report(7)
    countdown_id = celery_app.tasks["generate_report"].apply_async(args=[7], countdown=600).id
    now, deadline = time.time(), start_deadline_s()
    assert abs(store.zscore(LEDGER_KEY, job_id) - (now + deadline)) < 10
    assert abs(store.zscore(LEDGER_KEY, countdown_id) - (now + 600 + deadline)) < 10
