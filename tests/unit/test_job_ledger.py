"""The job ledger, the reconciler's publish and the claims that make jobs idempotent by id, against a real
Redis-protocol server (valkey). The whole path with a worker killed at the bad moment is
tests/integration/test_lost_job_window.py."""

from __future__ import annotations

import json
import uuid

import pytest
import redis
from opentelemetry import trace
from opentelemetry.instrumentation.celery import CeleryInstrumentor

from services.telemetry import setup as telemetry
from services.worker import job_claims
from services.worker.celery_app import app as celery_app
from services.worker.job_claims import LEDGER_KEY, LEDGER_MESSAGE_PREFIX, claim, mark_done
from services.worker.job_ledger import JobLedger, reconcile_once
from services.worker.tasks import send_welcome_email
from tests.unit.gateway_app import point_celery_at


@pytest.fixture
def store(valkey_url, monkeypatch) -> redis.Redis:
    monkeypatch.setenv("REDIS_URL", valkey_url)
    monkeypatch.setattr(job_claims, "_client", None)
    client = redis.Redis.from_url(valkey_url)
    client.delete(LEDGER_KEY)
    return client


def test_claim_rules(store):
    job = str(uuid.uuid4())
    assert claim(job, attempt=0, redelivered=False, ttl_s=60)  # first copy runs
    assert not claim(job, attempt=0, redelivered=False, ttl_s=60)  # a second copy does nothing
    assert claim(job, attempt=0, redelivered=True, ttl_s=60)  # the broker's redelivery takes over
    assert claim(job, attempt=1, redelivered=False, ttl_s=60)  # our own retry runs
    assert not claim(job, attempt=1, redelivered=False, ttl_s=60)
    mark_done(job, ttl_s=60)
    assert not claim(job, attempt=2, redelivered=True, ttl_s=60)  # finished: nothing runs it again


def test_a_job_is_due_after_its_deadline_once_and_leaves_the_ledger_when_claimed(store):
    ledger = JobLedger(store, deadline_s=10)
    job = str(uuid.uuid4())
    ledger.record({"id": job, "task": "send_welcome_email"}, [[1, "example.org"], {}, {}], "", "celery")
    assert ledger.take_due(now=_now() + 5) == []
    (taken,) = ledger.take_due(now=_now() + 11)
    assert taken[0] == job and taken[1]["body"][0] == [1, "example.org"]
    assert ledger.take_due(now=_now() + 12) == []  # taken: another reconciler does not get it too
    assert claim(job, attempt=0, redelivered=False, ttl_s=60)
    assert store.zscore(LEDGER_KEY, job) is None and store.get(LEDGER_MESSAGE_PREFIX + job) is None
    assert ledger.backoff_s(1) == 20 and ledger.backoff_s(30) == 3600


def test_reconcile_publishes_the_same_job_again_in_its_own_trace(store, valkey_url, spans):
    broker = point_celery_at(valkey_url)
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
