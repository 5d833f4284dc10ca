"""No accepted job is lost when the worker dies with the job's message in flight: on Redis and RabbitMQ.

The bad moment, made deterministic: kombu's Redis transport takes a message off the queue (BRPOP) before
it records it as unacknowledged. The test waits until the worker's main process has its BRPOP pending in
Redis, SIGSTOPs that process, queues a job (Redis hands the message to the stopped process's socket: the
queue is empty and nothing is in `unacked`), then SIGKILLs the process. Without the job ledger the job
stays PENDING forever (as in the report that opened issue 14); with it, the gateway's reconciler publishes
the job again after its start deadline (3 s here) and it runs, in the same trace.

The second bad moment: a job CLAIMED by a run that then died with the whole worker (its pool child killed
with the main process). The message stays in kombu's `unacked` (visibility timeout an hour here, as by
default), so the broker does not bring it back; the ledger must. Before the claims had leases, the claim
took the job off the ledger and never ended: the job stayed PENDING (checked, 60 s). The kill is exact:
the request's baggage asks for `worker:kill=job_claimed`.

On RabbitMQ the broker itself keeps the unacknowledged delivery and hands it out again when the
connection dies: the same steps end in SUCCESS there too, with or without a copy from the reconciler.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.amqp_fixtures import env_for_broker
from tests.integration.fault_tools import Programs, metric_value
from tests.integration.stack import FAST_LEDGER_ENV, RunningStack, start_private_stack, stop_in_background
from tracehop.traffic import fault_baggage

ENV = {
    **FAST_LEDGER_ENV,
    "TRACEHOP_JOB_CLAIM_LEASE_S": "2",
    "TRACEHOP_FAULT_INJECTION": "1",  # worker:kill=job_claimed
}


@pytest.fixture(scope="module", params=["redis", "amqp"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = env_for_broker(request, ENV)
    running = start_private_stack(tmp_path_factory.mktemp(f"lost-job-{request.param}"), env)
    running.broker = request.param  # type: ignore[attr-defined]
    try:
        yield running
    finally:
        stop_in_background(running.stack)


def stop_during_a_fresh_brpop(client: redis.Redis, pid: int, timeout: float = 30) -> None:
    """SIGSTOP `pid` right after its consumer sent a new BRPOP (kombu's waits at most 1 s), so Redis
    still holds it blocked for nearly a second: long enough for the test's request to be popped by it."""
    deadline = time.monotonic() + timeout
    last_seen: dict[str, int] = {}
    while True:
        assert time.monotonic() < deadline, "the worker never blocked on the queue"
        for entry in client.client_list():
            if entry.get("cmd") != "brpop" or "b" not in entry.get("flags", ""):
                continue
            sent = int(entry["tot-net-in"])
            if entry["id"] in last_seen and last_seen[entry["id"]] != sent:
                os.kill(pid, signal.SIGSTOP)
                return
            last_seen[entry["id"]] = sent
        time.sleep(0.01)


def test_a_worker_killed_with_the_job_in_flight_loses_no_job(stack: RunningStack):
    programs = Programs(stack.stack)
    store = redis.Redis.from_url(stack.stack.redis_url, decode_responses=True)
    worker = programs.pid("worker")
    if stack.broker == "redis":
        stop_during_a_fresh_brpop(store, worker)
    else:
        time.sleep(2)  # the consumer is registered with RabbitMQ once the worker is ready
        os.kill(worker, signal.SIGSTOP)
    try:
        created = stack.http.post(
            f"{stack.gateway}/api/users", json={"name": "Ada", "email": "ada@example.org"}, timeout=10
        )
        assert created.status_code == 201, created.text
        job_id, trace_id = created.json()["job_id"], created.json()["trace_id"]
        if stack.broker == "redis":
            # The stopped process's BRPOP took it: not in the queue, not recorded as unacknowledged.
            deadline = time.monotonic() + 5
            while store.llen("celery") and time.monotonic() < deadline:
                time.sleep(0.02)
            assert store.llen("celery") == 0
            assert not store.hexists("unacked", job_id) and "unacked" not in [
                k for k in store.keys("unacked*")
            ]
    finally:
        os.kill(worker, signal.SIGKILL)  # the main process only, as an OOM kill would
    programs.wait_running("worker", other_than=worker)

    job = stack.wait_for_job(job_id, timeout=60)
    assert job["state"] == "SUCCESS", job

    def arrived(spans: list) -> bool:  # spans come in batches from three processes
        names = {s.name for s in spans}
        wanted = {"run/send_welcome_email", "apply_async/send_welcome_email"}
        if stack.broker == "redis":
            wanted.add("republish send_welcome_email")
        return wanted <= names

    spans = stack.traces.wait_for_trace(trace_id, until=arrived, timeout=30)
    by_id = {s.span_id: s for s in spans}
    runs = [s for s in spans if s.kind == "CONSUMER" and s.name == "run/send_welcome_email"]
    # A copy may have arrived too (the broker's redelivery and the reconciler's): exactly one ran.
    (consumer,) = [s for s in runs if not s.attributes.get("job.duplicate_skipped")]
    if stack.broker == "redis":
        # The copy's run hangs under a `republish` span, which hangs under the original publish.
        republish = by_id[consumer.parent_span_id]
        assert republish.name == "republish send_welcome_email" and republish.service == "gateway"
        assert republish.attributes["job.republish_attempt"] == 1
        assert by_id[republish.parent_span_id].name == "apply_async/send_welcome_email"
        assert consumer.attributes["job.republished"] is True
        metrics = f"{stack.gateway}/metrics"
        assert metric_value(metrics, "tracehop_jobs_republished_total", {"task": "send_welcome_email"}) >= 1
    else:
        assert by_id[consumer.parent_span_id].name in (
            "apply_async/send_welcome_email",
            "republish send_welcome_email",
        )


def test_a_worker_killed_right_after_claiming_the_job_loses_no_job(stack: RunningStack):
    programs = Programs(stack.stack)
    worker = programs.pid("worker")
    created = stack.http.post(
        f"{stack.gateway}/api/users",
        json={"name": "Grace", "email": "grace@example.org"},
        headers={"baggage": fault_baggage("worker:kill=job_claimed")},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    job_id, trace_id = created.json()["job_id"], created.json()["trace_id"]
    programs.wait_running("worker", other_than=worker)  # the kill point took the whole worker down

    job = stack.wait_for_job(job_id, timeout=60)
    assert job["state"] == "SUCCESS", job

    def ran(span) -> bool:
        return span.name == "run/send_welcome_email" and not span.attributes.get("job.duplicate_skipped")

    def finished(spans) -> bool:
        # Wait for the run that finished the job, not just any run span: on Redis only the reconciler's
        # copy can have finished it.
        if stack.broker == "redis":
            return any(ran(s) and s.attributes.get("job.republished") for s in spans)
        return any(map(ran, spans))

    spans = stack.traces.wait_for_trace(trace_id, until=finished, timeout=30)
    runs = [s for s in spans if ran(s)]
    if stack.broker == "redis":
        # Only the ledger could bring it back: the run that finished is the reconciler's copy.
        assert any(s.attributes.get("job.republished") for s in runs), [s.attributes for s in runs]
