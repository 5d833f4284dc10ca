"""The four classic mistakes of tracing Celery, each switched on in a stack of its own: the trace breaks
exactly as docs/context-propagation.md predicts (the switches: services/demo/broken_on_purpose.py).

Cheap on purpose: one stack per switch (no beat, no Prometheus), one request each (two for B3), stop.
Tests 2 and 4 are about what a process flushes when it exits, so their stacks export nothing on a timer
(OTEL_BSP_SCHEDULE_DELAY=60000): only what each process flushes on its way out reaches the trace store,
which stops last; the test stops the stack and reads the store's file. That makes the loss certain rather
than likely (with the SDK's default 5 s delay a job's spans are lost all but a few times in a thousand).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.stack import RunningStack, start_private_stack, stop_in_background, stored_spans
from tracehop.stack.processes import group_members
from tracehop.traces.query import Span
from tracehop.traces.tree import Node, assert_trace_tree

# One gunicorn worker per service: these stacks serve one request at a time, and each worker process
# costs a second of CPU to start.
BASE_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200", "TRACEHOP_MAIL_LATENCY_MS": "1", "GUNICORN_WORKERS": "1"}
FLUSH_ON_EXIT_ONLY = {"OTEL_BSP_SCHEDULE_DELAY": "60000"}

# What reaches the store of a POST /api/users whose job's spans were lost: the producer has no consumer.
CREATE_USER_WITHOUT_JOB = """
    gateway  SERVER    POST /api/users
    ├─ gateway  CLIENT    POST
    │  └─ users  SERVER    POST /users
    │     └─ …
    └─ gateway  PRODUCER  apply_async/send_welcome_email
"""


@pytest.fixture
def stack_with(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], RunningStack]]:
    started: list[RunningStack] = []

    def start(env: dict[str, str]) -> RunningStack:
        running = start_private_stack(tmp_path, {**BASE_ENV, **env})
        started.append(running)
        return running

    yield start
    for running in started:
        stop_in_background(running.stack)  # harmless for tests 2 and 4, which stop theirs themselves


def create_user(stack: RunningStack) -> dict:
    response = stack.post_user()
    assert response.status_code == 201, response.text
    body = response.json()
    assert stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    return body


def only_trace_with(stack: RunningStack, service: str, operation: str, timeout: float = 30.0) -> list[Span]:
    """The one trace (of this private stack) holding `operation` of `service`, once it is there."""
    deadline = time.monotonic() + timeout
    while True:
        now = datetime.now(UTC)
        found = stack.traces.search(service, now - timedelta(minutes=10), now, operation=operation)
        if len(found) == 1 or time.monotonic() > deadline:
            assert len(found) == 1, f"expected one trace with {service} {operation}, found {len(found)}"
            return next(iter(found.values()))
        time.sleep(0.2)


def assert_true_root(root: Node, not_in_trace: str) -> None:
    """A new trace's root: no parent at all (not an orphan whose parent went missing)."""
    assert root.span.parent_span_id == ""
    assert root.span.trace_id != not_in_trace


def job_ran_in_trace(stack: RunningStack, trace_id: str) -> bool:
    """The job's log lines carry the request's trace id: it ran inside the trace, its spans existed."""
    return bool(stack.wait_for_log_lines("worker", lambda line: line.get("trace_id") == trace_id))


# ---------------------------------------------------------------------- 1. producer not instrumented


def test_1_uninstrumented_producer_puts_the_job_in_a_trace_of_its_own(stack_with):
    stack = stack_with({"TRACEHOP_BROKEN_UNINSTRUMENTED_PRODUCER": "1"})
    body = create_user(stack)

    # No PRODUCER span: nothing in the gateway knew a message was sent, nothing put a context in it.
    stack.assert_tree(
        body["trace_id"],
        """
        gateway  SERVER    POST /api/users
        └─ gateway  CLIENT    POST
           └─ users  SERVER    POST /users
              └─ …
        """,
    )
    (job,) = assert_trace_tree(
        only_trace_with(stack, "worker", "run/send_welcome_email"),
        """
        worker  CONSUMER  run/send_welcome_email
        └─ …
        """,
    )
    assert_true_root(job, not_in_trace=body["trace_id"])
    assert job.span.attributes["messaging.message.id"] == body["job_id"]


# ------------------------------------------------------------- 2. tracing set up before the fork


def test_2_setup_before_fork_loses_the_spans_a_child_holds_when_it_exits(stack_with):
    # Observed with the SDK we lock: the batch processor re-creates its thread in each forked child
    # (os.register_at_fork), so spans DO flow while the worker runs. But the provider belongs to the
    # main process: the flush at child exit does not reach it, and a prefork child ends with os._exit
    # (no atexit), so whatever a child still holds when it exits is lost.
    stack = stack_with({"TRACEHOP_BROKEN_SETUP_BEFORE_FORK": "1", **FLUSH_ON_EXIT_ONLY})
    body = create_user(stack)
    assert job_ran_in_trace(stack, body["trace_id"])

    stack.stack.stop()  # gunicorn workers and the pool children exit, flushing what they hold

    assert_trace_tree(stored_spans(stack.stack, body["trace_id"]), CREATE_USER_WITHOUT_JOB)


# ---------------------------------------------------------------------- 3. W3C here, B3 there


def test_3_b3_in_the_worker_starts_a_new_trace_at_each_hop_it_touches(stack_with):
    stack = stack_with({"TRACEHOP_BROKEN_B3_WORKER": "1"})
    user_id = create_user(stack)["user"]["id"]
    response = stack.http.post(f"{stack.gateway}/api/users/{user_id}/report", timeout=10)
    body = response.json()
    assert stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"

    # The gateway wrote `traceparent` into the message; the worker looked for `b3` and found none...
    stack.assert_tree(
        body["trace_id"],
        """
        gateway  SERVER    POST /api/users/<user_id>/report
        └─ gateway  PRODUCER  apply_async/generate_report
        """,
    )
    job_spans = only_trace_with(stack, "worker", "run/generate_report")
    (job,) = assert_trace_tree(job_spans, "worker  CONSUMER  run/generate_report\n└─ …")
    assert_true_root(job, not_in_trace=body["trace_id"])
    # ...then wrote `b3` into its request to users, which looked for `traceparent`: a third trace.
    (client,) = [node for _, node in job.walk() if node.span.kind == "CLIENT"]
    assert client.children == []
    (users,) = assert_trace_tree(
        only_trace_with(stack, "users", "GET /users/<int:user_id>"),
        """
        users  SERVER    GET /users/<int:user_id>
        └─ …
        """,
    )
    assert_true_root(users, not_in_trace=body["trace_id"])
    assert users.span.trace_id != job.span.trace_id


# ------------------------------------------- 4. max_tasks_per_child=1 without a flush at child exit


def pool_children(stack: RunningStack) -> set[int]:
    """pids of the worker's prefork children (the worker program leads its own process group)."""
    (worker,) = [status for status in stack.stack.status() if status.component == "worker"]
    return set(group_members(worker.pid)) - {worker.pid}


def test_4_recycled_child_without_a_flush_loses_its_jobs_spans(stack_with):
    # One pool child: the child seen before the job is the one that runs it. With several, the set read
    # here could miss a child still being forked, which then ran the job while every child read here
    # stayed (a flake under load).
    stack = stack_with(
        {
            "TRACEHOP_BROKEN_NO_FLUSH_ON_CHILD_EXIT": "1",
            "TRACEHOP_WORKER_CONCURRENCY": "1",
            **FLUSH_ON_EXIT_ONLY,
        }
    )
    # Ready means the worker's /metrics answers (worker_init), which can be before the pool has forked.
    deadline = time.monotonic() + 30
    while not (children := pool_children(stack)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(children) == 1, f"the worker forked {len(children)} pool children, not 1"
    body = create_user(stack)
    assert job_ran_in_trace(stack, body["trace_id"])

    # The child that ran the job exits right after it (and a new one takes its place): its spans are
    # gone now, long before any shutdown.
    deadline = time.monotonic() + 30
    while pool_children(stack) >= children and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not pool_children(stack) >= children, "no pool child was replaced after the job"

    stack.stack.stop()

    assert_trace_tree(stored_spans(stack.stack, body["trace_id"]), CREATE_USER_WITHOUT_JOB)
