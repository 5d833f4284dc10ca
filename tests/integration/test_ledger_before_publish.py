"""The job lost in a `make test` chaos run, made exact on a private stack (real gateway, worker, Redis):
the publish reaches the broker, a dying worker takes the message, and Redis dies before the ledger write
that followed the publish. Nothing could bring that job back; the client held a 201.

To hold the moment open, the broker is a Redis of its own (CELERY_BROKER_URL, as a deployment may have);
the ledger, results and users stay in the stack's Redis. The broker holds the gateway's LPUSH
(`CLIENT PAUSE WRITE`), the test SIGKILLs the stack's Redis (supervisord restarts it from its append-only
file), lets the LPUSH through, and the message goes to a SIGSTOPped worker (or is taken from the queue by
the test), which is then SIGKILLed: no `unacked` record, no broker copy. The job must still end SUCCESS,
run once, in its request's trace — through the ledger, written before the publish. Recording after the
publish (as before) fails it: the job stays PENDING (checked).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import redis
import requests

from services.worker.job_claims import LEDGER_KEY
from tests.integration.fault_tools import Programs
from tests.integration.stack import FAST_LEDGER_ENV, RunningStack, start_private_stack, stop_in_background
from tests.valkey_process import AofValkey

ENV = FAST_LEDGER_ENV  # the job must come back through the ledger


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AofValkey]:
    server = AofValkey(tmp_path_factory.mktemp("broker"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(broker: AofValkey, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_private_stack(
        tmp_path_factory.mktemp("ledger-first"), {**ENV, "CELERY_BROKER_URL": broker.url}
    )
    try:
        yield running
    finally:
        stop_in_background(running.stack)


def test_a_job_published_as_redis_dies_and_taken_by_a_dying_worker_still_runs_once(stack, broker):
    programs = Programs(stack.stack)
    store = redis.Redis.from_url(stack.stack.redis_url, socket_timeout=2)
    queue = broker.client()
    worker, redis_pid = programs.pid("worker"), programs.pid("redis")
    time.sleep(2)  # the worker is consuming
    os.kill(worker, signal.SIGSTOP)  # its pending read (if any) will take the message with it
    waiting_before = store.zcard(LEDGER_KEY)
    answer: dict[str, requests.Response] = {}

    def create() -> None:
        answer["created"] = stack.http.post(
            f"{stack.gateway}/api/users", json={"name": "Ada", "email": "ada@example.org"}, timeout=30
        )

    queue.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")  # the gateway's LPUSH waits in the broker
    request = threading.Thread(target=create)
    try:
        request.start()
        deadline = time.monotonic() + 5  # a record written after the publish never comes while it waits
        while store.zcard(LEDGER_KEY) == waiting_before and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(redis_pid, signal.SIGKILL)  # Redis dies with the publish under way
    finally:
        queue.execute_command("CLIENT", "UNPAUSE")
    request.join(timeout=40)
    created = answer["created"]
    assert created.status_code == 201, created.text  # the publish went through: the client holds a job id
    job_id, trace_id = created.json()["job_id"], created.json()["trace_id"]

    queue.delete("celery")  # unless the stopped worker's read took it: gone from the broker either way
    assert not queue.hexists("unacked", job_id)
    os.kill(worker, signal.SIGKILL)
    programs.wait_running("redis", other_than=redis_pid)
    programs.wait_running("worker", other_than=worker)

    job = stack.wait_for_job(job_id, timeout=60)
    assert job["state"] == "SUCCESS", job

    def ran(span) -> bool:
        return span.name == "run/send_welcome_email" and not span.attributes.get("job.duplicate_skipped")

    def run_and_its_parent(spans) -> bool:
        # The worker's run and the gateway's republish span come in separate batches, either first.
        ids = {s.span_id for s in spans}
        return any(ran(s) and s.parent_span_id in ids for s in spans)

    spans = stack.traces.wait_for_trace(trace_id, until=run_and_its_parent, timeout=30)
    by_id = {s.span_id: s for s in spans}
    (run,) = [s for s in spans if ran(s)]  # exactly one run did the work
    assert run.attributes["job.republished"] is True
    republish = by_id[run.parent_span_id]  # the reconciler's copy, in the request's trace
    assert republish.name == "republish send_welcome_email" and republish.service == "gateway"
    assert by_id[republish.parent_span_id].name == "apply_async/send_welcome_email"
