"""Faults of the stack's dependencies, on a private stack: the trace backend, users (down or hung), Redis.

Each test breaks one program of its own stack (never the session stack the other tests share), watches
what callers get while it is broken, then brings it back and watches the system recover without a
restart of anything else. The stack runs one worker process (TRACEHOP_WORKER_CONCURRENCY=1), so a long
job keeps it busy and a second job must wait in Redis.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from services.web.settings import SERVICES
from tests.integration.fault_tools import BlackHole, metric_value, publish_job, timed
from tests.integration.stack import WHOLE_TRACE, RunningStack, has_spans, private_stack
from tests.waiting import eventually
from tracehop.traces.query import Span
from tracehop.traces.tree import build_tree

EXPORT_TIMEOUT_S = 1.0
# Short, so that waiting on a hung users service costs the test seconds; long enough that a loaded
# machine never times out a users service that answers.
USERS_TIMEOUT_S = 1.5
# What a caller may wait beyond the users timeout: the gateway's own work, on two busy cores.
USERS_TIMEOUT_MARGIN_S = 1.0
ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    # Short, so that a hung backend fails many exports (and would log many lines) within the test.
    "OTEL_EXPORTER_OTLP_TIMEOUT": str(EXPORT_TIMEOUT_S),
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_WORKER_CONCURRENCY": "1",
    "TRACEHOP_VISIBILITY_TIMEOUT_S": "5",
    "TRACEHOP_USERS_TIMEOUT": str(USERS_TIMEOUT_S),
    # No retries of a failed span batch (60 s by default, export_retry.py): this test watches batches
    # fail and be counted while the backend is away; riding out an outage is `make chaos`'s to measure.
    "TRACEHOP_EXPORT_RETRY_S": "0",
}
# "Within a couple of seconds": a refused connection plus the short publish and result-backend retry policies.
FAIL_FAST_S = 2.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("faults-dependencies"), ENV) as running:
        yield running


def metrics_urls(stack: RunningStack) -> dict[str, str]:
    urls = stack.stack.urls
    return {
        "gateway": f"{urls['gateway']}/metrics",
        "users": f"{urls['users']}/metrics",
        "worker": urls["worker_metrics"],
    }


def exporter_log_lines(stack: RunningStack, service: str, after: int) -> list[dict]:
    return [
        line
        for line in stack.log_lines(service)[after:]
        if line.get("logger", "").startswith("opentelemetry")
    ]


def test_trace_backend_down_or_hung_costs_requests_nothing_and_export_resumes(stack, programs):
    baseline = [timed(lambda: stack.post_user())[1] for _ in range(8)]
    dropped_before = {
        name: metric_value(url, "tracehop_spans_dropped_total") for name, url in metrics_urls(stack).items()
    }
    log_marks = {service: len(stack.log_lines(service)) for service in SERVICES}
    statuses, latencies = [], []

    def traffic(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            response, took = timed(lambda: stack.post_user())
            statuses.append(response.status_code)
            latencies.append(took)
            time.sleep(0.05)

    with programs.stopped("trace-store"):
        traffic(4)  # down: every export is refused at once
        with BlackHole(stack.stack.ports.otlp) as hole:
            traffic(4)  # hung: every export waits for its timeout
        assert hole.connections > 0, "the exporters never reached the hung backend"

    assert set(statuses) == {201}, statuses
    # Export runs on the batch processor's own thread: requests must not wait for the backend at all,
    # and never for longer than one export timeout.
    assert max(latencies) < max(baseline) + EXPORT_TIMEOUT_S, (max(latencies), max(baseline))
    assert statistics.median(latencies) < statistics.median(baseline) + 0.25
    for name, url in metrics_urls(stack).items():
        eventually(
            lambda url=url, name=name: (
                metric_value(url, "tracehop_spans_dropped_total") > dropped_before[name]
            ),
            15,
            f"{name} counts the spans it could not export",
        )
    for service in SERVICES:
        # One line per message per process per 30 s (RepeatLimiter, services/telemetry/logs.py): at most two
        # processes here, a handful of distinct exporter messages; without the limiter this is dozens.
        lines = exporter_log_lines(stack, service, log_marks[service])
        assert len(lines) <= 8, [line["message"] for line in lines]
    # The backend is back: new traces arrive whole. "Back" is its query API answering, not supervisord's
    # RUNNING: a loaded machine can take seconds more to open the database (a flake when the wait below
    # started at RUNNING).
    (probe,) = [p for p in stack.stack.probes() if p.component == "trace-store"]
    eventually(lambda: probe.check() is None, 60, "the trace store answers again")
    trace_id = stack.post_user().json()["trace_id"]
    stack.traces.wait_for_trace(trace_id, until=has_spans(*WHOLE_TRACE), timeout=60)


def test_users_down_is_a_503_with_its_trace_and_readyz_names_it(stack, programs):
    with programs.stopped("users"):
        response, took = timed(lambda: stack.post_user())
        assert response.status_code == 503 and took < FAIL_FAST_S
        body = response.json()
        assert body["error"] == "users_unavailable" and len(body["trace_id"]) == 32
        ready = stack.http.get(f"{stack.gateway}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"users": False, "redis": True}
        assert "users" in ready.json()["message"]

    spans = stack.traces.wait_for_trace(
        body["trace_id"], until=has_spans(("gateway", "SERVER"), ("gateway", "CLIENT")), timeout=30
    )
    (client,) = [s for s in spans if s.kind == "CLIENT" and s.service == "gateway"]
    assert client.is_error
    assert any(name == "exception" for name, _, _ in client.events), client.events
    (server,) = [s for s in spans if s.kind == "SERVER"]
    assert server.is_error  # a 5xx answer marks the SERVER span as an error
    assert not any(s.kind == "PRODUCER" for s in spans)  # nothing was queued for a user never created
    eventually(lambda: stack.post_user().status_code == 201, 30, "users answers again")


def answered_within(call, seconds: float, what: str) -> tuple[requests.Response, float]:
    """`call` (given the deadline as its timeout) and how long it took; a clear failure past the
    deadline instead of a hang, should the users call have lost its own timeout."""
    started = time.perf_counter()
    try:
        response = call(seconds)
    except requests.Timeout:
        raise AssertionError(f"{what}: no answer within {seconds:.1f}s") from None
    return response, time.perf_counter() - started


def assert_waited_for_the_users_timeout(span: Span) -> None:
    """The span ran into the users timeout: it waited that long (a refusal would be immediate), and
    not much longer (a retried timeout would be twice as long)."""
    took = span.duration_ns / 1e9
    assert USERS_TIMEOUT_S <= took < USERS_TIMEOUT_S + USERS_TIMEOUT_MARGIN_S, (span.name, took)
    assert span.is_error
    assert any(name == "exception" for name, _, _ in span.events), span.events


def hung_report_attempts(spans: list[Span]) -> list[tuple[Span, Span]]:
    """(CONSUMER, CLIENT) of each report attempt that called users and was retried."""
    consumers = [
        node
        for root in build_tree(spans)
        for _, node in root.walk()
        if node.span.kind == "CONSUMER" and node.span.attributes.get("celery.state") == "RETRY"
    ]
    return [
        (consumer.span, node.span)
        for consumer in consumers
        for _, node in consumer.walk()
        if node.span.kind == "CLIENT"
    ]


def test_users_hung_is_a_503_within_its_timeout_and_the_report_job_retries(stack, programs):
    """A users service that accepts connections and never answers: the case the users timeout is for."""
    user_id = stack.post_user().json()["user"]["id"]
    deadline = USERS_TIMEOUT_S + USERS_TIMEOUT_MARGIN_S
    gateway = stack.gateway
    with programs.stopped("users"), BlackHole(stack.stack.ports.users) as hole:
        calls = {
            "create a user": lambda t: stack.http.post(
                f"{gateway}/api/users", json={"name": "H", "email": "hung@example.org"}, timeout=t
            ),
            "read a user": lambda t: stack.http.get(f"{gateway}/api/users/{user_id}", timeout=t),
        }
        trace_ids = []
        for what, call in calls.items():
            response, took = answered_within(call, deadline, what)
            assert response.status_code == 503, (what, response.text)
            assert took >= USERS_TIMEOUT_S, (what, took)  # it waited: users was hung, not refusing
            body = response.json()
            assert body["error"] == "users_unavailable" and "ReadTimeout" in body["message"], body
            trace_ids.append(body["trace_id"])
        ready, _ = answered_within(
            lambda t: stack.http.get(f"{gateway}/readyz", timeout=t), deadline, "readyz"
        )
        assert ready.status_code == 503 and ready.json()["checks"] == {"users": False, "redis": True}

        # The report job: queued fine (Redis is up), then its call to users times out and it is retried.
        queued = stack.http.post(f"{gateway}/api/users/{user_id}/report", timeout=10)
        assert queued.status_code == 202
        report = queued.json()
        spans = stack.traces.wait_for_trace(report["trace_id"], until=hung_report_attempts, timeout=30)
        for consumer, client in hung_report_attempts(spans):
            assert consumer.name == "run/generate_report"
            assert client.service == "worker"
            assert_waited_for_the_users_timeout(client)
        assert hole.connections >= 3  # the create, the read and the job all reached the hung users

    for trace_id in trace_ids:
        spans = stack.traces.wait_for_trace(
            trace_id, until=has_spans(("gateway", "SERVER"), ("gateway", "CLIENT")), timeout=30
        )
        (client,) = [s for s in spans if s.kind == "CLIENT"]
        assert_waited_for_the_users_timeout(client)
        (server,) = [s for s in spans if s.kind == "SERVER"]
        assert server.is_error
    # users is back: a later retry of the same job succeeds.
    assert stack.wait_for_job(report["job_id"], timeout=60)["state"] == "SUCCESS"


def test_redis_down_answers_503_fast_and_no_accepted_job_is_lost(stack, programs):
    user_id = stack.post_user().json()["user"]["id"]
    worker_pid = programs.pid("worker")
    # The only worker process is busy with a long job; the report job queued next waits in Redis.
    trace_id = uuid.uuid4().hex
    busy = publish_job(
        stack.stack.redis_url, "long_job", [4, 500], f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    )
    eventually(
        lambda: stack.http.get(f"{stack.gateway}/api/jobs/{busy}", timeout=5).json()["state"] == "STARTED",
        15,
        "the long job started",
    )
    queued = stack.http.post(f"{stack.gateway}/api/users/{user_id}/report", timeout=10)
    assert queued.status_code == 202
    waiting = queued.json()["job_id"]

    with programs.stopped("redis"):
        calls = {
            "queue a job": lambda: stack.http.post(f"{stack.gateway}/api/users/{user_id}/report", timeout=10),
            "create a user": lambda: stack.post_user(),
            "read a job": lambda: stack.http.get(f"{stack.gateway}/api/jobs/{waiting}", timeout=10),
        }
        for what, call in calls.items():
            response, took = timed(call)
            assert response.status_code == 503, (what, response.text)
            assert took < FAIL_FAST_S, (what, took)
            assert len(response.json()["trace_id"]) == 32
        ready = stack.http.get(f"{stack.gateway}/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"] is False

    # Recovered without restarting the gateway: the next job is accepted again.
    eventually(
        lambda: stack.http.post(f"{stack.gateway}/api/users/{user_id}/report", timeout=10).status_code == 202,
        20,
        "the gateway queues jobs again",
    )
    # The job accepted before the outage survived it (Redis keeps an append-only file) and ran; so did the
    # long job that was running when Redis went away (its unacknowledged message came back).
    assert stack.wait_for_job(waiting, timeout=60)["state"] == "SUCCESS"
    assert stack.wait_for_job(busy, timeout=60)["state"] == "SUCCESS"
    after = stack.post_user().json()["job_id"]
    assert stack.wait_for_job(after, timeout=30)["state"] == "SUCCESS"
    assert programs.pid("worker") == worker_pid  # the worker reconnected; nobody restarted it
