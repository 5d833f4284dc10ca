"""The job ledger, the reconciler's publish and the claims that make jobs idempotent by id, against a real
Redis-protocol server (valkey). The whole path with a worker killed at the bad moment is
tests/integration/test_lost_job_window.py."""

from __future__ import annotations

import json
import time
import uuid

import pytest
import redis
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from services.telemetry import setup as telemetry
from services.worker import job_claims
from services.worker.celery_app import app as celery_app
from services.worker.job_claims import (
    LEDGER_KEY,
    LEDGER_MESSAGE_PREFIX,
    claim,
    mark_done,
    mark_retried,
    renew,
)
from services.worker.job_ledger import JobLedger, reconcile_once
from services.worker.tasks import send_welcome_email


@pytest.fixture
def store(valkey_url, monkeypatch) -> redis.Redis:
    monkeypatch.setenv("REDIS_URL", valkey_url)
    monkeypatch.setattr(job_claims, "_client", None)
    client = redis.Redis.from_url(valkey_url)
    client.delete(LEDGER_KEY)
    return client


def test_claim_rules(store):
    job = str(uuid.uuid4())
    assert claim(job, attempt=0, redelivered=False, ttl_s=60, token="a")  # first copy runs
    assert not claim(job, attempt=0, redelivered=False, ttl_s=60)  # a second copy: the lease is held
    assert claim(job, attempt=0, redelivered=True, ttl_s=60, token="b")  # the broker's redelivery takes over
    assert not renew(job, "a") and renew(job, "b")  # only the holder renews
    assert claim(job, attempt=1, redelivered=False, ttl_s=60, token="c")  # our own retry runs
    assert not claim(job, attempt=0, redelivered=True, ttl_s=60)  # a stale copy of an earlier attempt
    mark_retried(job, "c")  # attempt 1 ended in a retry: its successor (attempt 2) is on its way
    assert not claim(job, attempt=1, redelivered=True, ttl_s=60)
    assert claim(job, attempt=2, redelivered=False, ttl_s=60, token="d")
    mark_done(job, ttl_s=60)
    assert not claim(job, attempt=3, redelivered=True, ttl_s=60)  # finished: nothing runs it again


def test_claims_written_before_leases_are_understood(store):
    finished, started = str(uuid.uuid4()), str(uuid.uuid4())
    store.set(job_claims.CLAIM_PREFIX + finished, "done")
    store.set(job_claims.CLAIM_PREFIX + started, "0")  # an attempt number, with no holder to renew it
    assert not claim(finished, attempt=0, redelivered=True, ttl_s=60)
    assert claim(started, attempt=0, redelivered=False, ttl_s=60)


def test_a_dead_holders_lease_runs_out_and_a_copy_takes_over(store, monkeypatch):
    """The bad interleaving of issue 14's lost job: a run claimed the job and died (its pool child killed
    with the worker's main process). A claim without an end made every later copy that the broker did not
    mark as redelivered — the reconciler's — skip, for good."""
    monkeypatch.setenv("TRACEHOP_JOB_CLAIM_LEASE_S", "0.5")
    job = str(uuid.uuid4())
    assert claim(job, attempt=0, redelivered=False, ttl_s=60, token="dead")
    assert not claim(job, attempt=0, redelivered=False, ttl_s=60)  # alive as far as anyone knows
    time.sleep(0.6)  # no renewal: the holder is gone
    assert claim(job, attempt=0, redelivered=False, ttl_s=60, token="copy")
    assert not renew(job, "dead")


def test_a_claimed_job_stays_on_the_ledger_until_it_finishes(store, monkeypatch):
    monkeypatch.setenv("TRACEHOP_JOB_CLAIM_LEASE_S", "30")
    ledger = JobLedger(store, deadline_s=10)
    job = str(uuid.uuid4())
    ledger.record({"id": job, "task": "send_welcome_email"}, [[1, "example.org"], {}, {}], "", "celery")
    assert ledger.take_due(now=_now() + 5) == []
    (taken,) = ledger.take_due(now=_now() + 11)
    assert taken[0] == job and taken[1]["body"][0] == [1, "example.org"]
    assert ledger.take_due(now=_now() + 12) == []  # taken: another reconciler does not get it too
    assert claim(job, attempt=0, redelivered=False, ttl_s=60, token="t")
    # Still there, due when the lease would run out: if the holder dies, the reconciler brings it back.
    assert store.get(LEDGER_MESSAGE_PREFIX + job) is not None
    assert abs(store.zscore(LEDGER_KEY, job) - (_now() + 30)) < 5
    assert renew(job, "t")
    mark_done(job, ttl_s=60)
    assert store.zscore(LEDGER_KEY, job) is None and store.get(LEDGER_MESSAGE_PREFIX + job) is None
    # A record that came after the job finished (the publisher's, racing a fast worker) is cleaned up by
    # the copy it brings back, which does nothing.
    ledger.record({"id": job, "task": "send_welcome_email"}, [[1, "example.org"], {}, {}], "", "celery")
    assert not claim(job, attempt=0, redelivered=False, ttl_s=60)
    assert store.zscore(LEDGER_KEY, job) is None and store.get(LEDGER_MESSAGE_PREFIX + job) is None
    assert ledger.backoff_s(1) == 20 and ledger.backoff_s(30) == 3600


def test_reconcile_publishes_the_same_job_again_in_its_own_trace(store, broker, spans):
    telemetry.instrument(
        [CeleryInstrumentor()]
    )  # the PRODUCER span and its context in the message, as in the gateway
    with trace.get_tracer("test").start_as_current_span("request") as request_span:
        job = send_welcome_email.apply_async(args=[7, "example.org"]).id  # recorded by the signal
    (original,) = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    broker.delete("celery")  # the message a dying worker took with it
    assert store.zscore(LEDGER_KEY, job) is not None
    store.zadd(LEDGER_KEY, {job: 0})  # its start deadline has passed

    ledger = JobLedger(store, deadline_s=10)
    assert reconcile_once(celery_app, ledger) == 1
    (copy,) = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    assert copy["headers"]["id"] == job and copy["headers"]["tracehop_republished"] == 1
    assert json.loads(_body(copy)) == json.loads(_body(original))
    (republish,) = [s for s in spans.get_finished_spans() if s.name == "republish send_welcome_email"]
    trace_id = f"{request_span.get_span_context().trace_id:032x}"
    assert copy["headers"]["traceparent"].split("-")[1] == trace_id  # the job's own trace
    assert copy["headers"]["traceparent"].split("-")[2] == f"{republish.context.span_id:016x}"
    producer = original["headers"]["traceparent"].split("-")[2]
    assert f"{republish.parent.span_id:016x}" == producer  # under the original publish
    assert republish.attributes["job.republish_attempt"] == 1
    # The copy is on the ledger again, with the next (doubled) deadline.
    assert store.zscore(LEDGER_KEY, job) > _now() + 15


def _body(message: dict) -> str:
    import base64

    return base64.b64decode(message["body"]).decode()


def _now() -> float:
    import time

    return time.time()


def test_a_run_stops_renewing_its_lease_when_its_body_ends_even_without_after_return(store, valkey_url):
    """A `make chaos` run on RabbitMQ: the job ran, storing SUCCESS failed (Redis SIGKILLed), Celery
    acknowledged the message and never called after_return — and the lease, renewed until after_return,
    kept the job STARTED for good. The lease must end with the body, whatever happens after it."""
    from celery import Celery

    app = Celery("lease-test", broker="memory://", backend=valkey_url, task_cls=job_claims.IdempotentTask)
    seen_held: list[bool] = []

    @app.task(bind=True, name="lease_test.job")
    def job(self):
        seen_held.append(self.request.id in job_claims._held)
        raise RuntimeError("the job's own error")

    job_id = str(uuid.uuid4())
    job.push_request(id=job_id, retries=0, delivery_info={}, is_eager=False)
    try:
        with pytest.raises(RuntimeError):
            job()
    finally:
        job.pop_request()
    assert seen_held == [True]  # renewed while it ran
    assert job_id not in job_claims._held  # and no longer, though after_return was never called
    assert store.hget(job_claims.CLAIM_PREFIX + job_id, "state") == b"running"  # its lease will run out
