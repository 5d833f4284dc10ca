"""Faults of jobs, on a private stack: a worker killed mid-job, and a poison job that always fails.

The stack runs one worker process (TRACEHOP_WORKER_CONCURRENCY=1), so a job that held it up would hold
up every other job; a short visibility timeout (TRACEHOP_VISIBILITY_TIMEOUT_S=5) so that a job whose
whole worker died is handed out again within the test; and two retries for the welcome e-mail
(TRACEHOP_MAIL_MAX_RETRIES=2) so that the poison job gives up within seconds.

`long_job` (services/worker/tasks.py) works in steps, each a span that is exported as soon as it ends:
what an attempt finished before it was killed stays in the trace, while the attempt's own CONSUMER span,
never ended, dies with its process. The test queues it with a trace id of its own choosing.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.fault_tools import metric_value, publish_job
from tests.integration.stack import RunningStack, private_stack
from tracehop.traces.query import Span
from tracehop.traces.tree import assert_trace_tree

ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_WORKER_CONCURRENCY": "1",
    "TRACEHOP_VISIBILITY_TIMEOUT_S": "5",
    "TRACEHOP_MAIL_MAX_RETRIES": "2",
}
STEPS, STEP_MS = 6, 400


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("faults-jobs"), ENV) as running:
        yield running


def queue_long_job(stack: RunningStack) -> tuple[str, str]:
    trace_id = uuid.uuid4().hex
    job_id = publish_job(
        stack.stack.redis_url, "long_job", [STEPS, STEP_MS], f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01"
    )
    return job_id, trace_id


def first_attempt_pid(stack: RunningStack, trace_id: str) -> int:
    """The pid of the process running the job, read from its first finished step."""
    spans = stack.traces.wait_for_trace(
        trace_id, until=lambda spans: any(s.name == "long_job.step" for s in spans), timeout=20
    )
    return next(s.resource["process.pid"] for s in spans if s.name == "long_job.step")


def assert_both_attempts(stack: RunningStack, trace_id: str, killed_pid: int) -> None:
    """The killed attempt's finished steps, and the whole second attempt, in one trace."""

    def complete(spans: list[Span]) -> bool:
        second = sum(s.name == "long_job.step" and s.resource["process.pid"] != killed_pid for s in spans)
        return second == STEPS and any(s.kind == "CONSUMER" for s in spans)

    spans = stack.traces.wait_for_trace(trace_id, until=complete, timeout=30)
    first = [s for s in spans if s.name == "long_job.step" and s.resource["process.pid"] == killed_pid]
    assert 1 <= len(first) < STEPS
    # The killed attempt's steps have a parent that never arrived (its CONSUMER span died unfinished);
    # the second attempt is complete and knows it was a redelivery.
    step = "worker  INTERNAL  long_job.step"
    second_steps = "\n".join(f"{'└─' if i == STEPS - 1 else '├─'} {step}" for i in range(STEPS))
    assert_trace_tree(
        spans, "\n".join([step] * len(first) + ["worker  CONSUMER  run/long_job", second_steps])
    )
    (consumer,) = [s for s in spans if s.kind == "CONSUMER"]
    assert consumer.attributes["job.redelivered"] is True
    assert consumer.attributes["celery.state"] == "SUCCESS"


def test_job_survives_its_worker_process_being_killed(stack, programs):
    job_id, trace_id = queue_long_job(stack)
    pid = first_attempt_pid(stack, trace_id)
    os.kill(pid, signal.SIGKILL)  # the pool process running the job, as the OOM killer would

    job = stack.wait_for_job(job_id, timeout=30)
    assert job["state"] == "SUCCESS" and job["result"] == {"steps": STEPS, "redelivered": True}
    assert_both_attempts(stack, trace_id, pid)


def test_job_survives_the_whole_worker_being_killed(stack, programs):
    job_id, trace_id = queue_long_job(stack)
    pid = first_attempt_pid(stack, trace_id)
    main_pid = programs.kill_group("worker")  # main process and pool: nobody is left to requeue the job
    programs.wait_running("worker", other_than=main_pid)

    # The message is still unacknowledged in Redis; after the visibility timeout the new worker gets it.
    job = stack.wait_for_job(job_id, timeout=45)
    assert job["state"] == "SUCCESS" and job["result"] == {"steps": STEPS, "redelivered": True}
    assert_both_attempts(stack, trace_id, pid)


def test_poison_job_is_retried_then_failed_and_holds_up_nothing(stack, programs):
    worker_metrics = stack.stack.urls["worker_metrics"]
    failed_before = metric_value(
        worker_metrics, "tracehop_jobs_total", {"task": "send_welcome_email", "state": "failed"}
    )
    poison = stack.post_user(name="P", domain="maildown.example").json()
    # While the poison job waits for its retries, the single worker process keeps serving other jobs.
    started = time.monotonic()
    others = [stack.post_user(name="O").json()["job_id"] for _ in range(3)]
    for job_id in others:
        assert stack.wait_for_job(job_id, timeout=15)["state"] == "SUCCESS"
    assert time.monotonic() - started < 5

    job = stack.wait_for_job(poison["job_id"], timeout=30)
    assert job["state"] == "FAILURE"
    assert job["result"]["error"] == "TransientDeliveryError" and "421" in job["result"]["message"]
    assert (
        metric_value(worker_metrics, "tracehop_jobs_total", {"task": "send_welcome_email", "state": "failed"})
        == failed_before + 1
    )
    # The trace: the first attempt and two retries, each queued by the one before; the last one failed.
    spans = stack.traces.wait_for_trace(
        poison["trace_id"],
        until=lambda spans: sum(s.kind in ("PRODUCER", "CONSUMER") for s in spans) == 6,
        timeout=30,
    )
    hops = [s for s in spans if s.kind in ("PRODUCER", "CONSUMER")]
    (root,) = assert_trace_tree(
        hops,
        """
        gateway  PRODUCER  apply_async/send_welcome_email
        └─ worker  CONSUMER  run/send_welcome_email
           └─ worker  PRODUCER  apply_async/send_welcome_email
              └─ worker  CONSUMER  run/send_welcome_email
                 └─ worker  PRODUCER  apply_async/send_welcome_email
                    └─ worker  CONSUMER  run/send_welcome_email
        """,
    )
    attempts = [node.span for _, node in root.walk() if node.span.kind == "CONSUMER"]
    assert [s.attributes["celery.state"] for s in attempts] == ["RETRY", "RETRY", "FAILURE"]
    assert [s.is_error for s in attempts] == [False, False, True]
    assert any(name == "exception" for name, _, _ in attempts[-1].events)
