"""Every Celery shape keeps its trace: chain, chord, countdown, beat, a job queueing a job, a job calling
users — each with Redis and with RabbitMQ as the broker (the result backend is Redis for both).

One request each, the exact tree by parent ids; docs/context-propagation.md shows and explains each one.
The chord callback also carries span links to every task of its header (services/worker/chord_links.py):
its parent alone would name only the header task that happened to finish last.

The last tests (Redis only) check what travels in a Celery message and the per-request fault flags.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.context_capture import decoded_body, pushed_messages, wait_for
from tests.integration.expected_trees import REPORT_TREE, RETRY_TREE
from tests.integration.stack import WHOLE_TRACE, RunningStack, has_spans
from tracehop.traces.query import Span
from tracehop.traces.tree import Node, assert_trace_tree

# Decorator spans (@traced) may sit inside a job or a users request: a `…` line allows them.


def post(stack: RunningStack, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
    response = stack.http.post(f"{stack.gateway}{path}", json=body or {}, headers=headers, timeout=10)
    assert response.status_code in (201, 202), response.text
    return response.json()


def finished_job(stack: RunningStack, job_id: str) -> dict:
    job = stack.wait_for_job(job_id)
    assert job["state"] == "SUCCESS", job
    return job


def nodes_named(roots: list[Node], name: str) -> list[Node]:
    return [node for root in roots for _, node in root.walk() if node.span.name == name]


def test_the_jobs_travel_through_the_broker_named(broker_stack: RunningStack, request: pytest.FixtureRequest):
    # Guards the parametrisation itself: the worker's banner names the transport it consumes from.
    # The stack is ready once the worker's /metrics answers (worker_init), which can be a moment before
    # Celery prints its banner: wait for it, with a deadline.
    output = broker_stack.stack.layout.program_output("worker")
    scheme = {"redis": "redis://", "amqp": "amqp://"}[request.node.callspec.params["broker_stack"]]
    # The whole expected line, not just "transport:": the banner can be read half written.
    expected = f"transport:   {scheme}"
    deadline = time.monotonic() + 60
    while expected not in (banner := output.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert expected in banner, banner[-2000:]


# ------------------------------------------------------------------------------------------------ chain

CHAIN_TREE = """
    gateway  SERVER    POST /api/workflows/etl
    └─ gateway  PRODUCER  apply_async/etl_extract
       └─ worker  CONSUMER  run/etl_extract
          └─ worker  PRODUCER  apply_async/etl_transform
             └─ worker  CONSUMER  run/etl_transform
                └─ worker  PRODUCER  apply_async/etl_load
                   └─ worker  CONSUMER  run/etl_load
"""


def test_chain_is_a_staircase_each_step_queued_by_the_one_before(broker_stack: RunningStack):
    body = post(broker_stack, "/api/workflows/etl", {"source": "orders"})
    assert finished_job(broker_stack, body["job_id"])["result"] == {"source": "orders", "loaded": 3}
    broker_stack.assert_tree(body["trace_id"], CHAIN_TREE)


# ------------------------------------------------------------------------------------------------ chord

# Sibling order is ignored, so the callback may hang under whichever `run/count_words` matches.
CHORD_TREE = """
    gateway  SERVER    POST /api/workflows/wordcount
    ├─ gateway  PRODUCER  apply_async/count_words
    │  └─ worker  CONSUMER  run/count_words
    │     └─ worker  PRODUCER  apply_async/sum_counts
    │        └─ worker  CONSUMER  run/sum_counts
    ├─ gateway  PRODUCER  apply_async/count_words
    │  └─ worker  CONSUMER  run/count_words
    └─ gateway  PRODUCER  apply_async/count_words
       └─ worker  CONSUMER  run/count_words
"""


def test_chord_callback_is_child_of_the_last_header_task_and_linked_to_all(broker_stack: RunningStack):
    body = post(broker_stack, "/api/workflows/wordcount", {"text": "one two three four five six", "parts": 3})
    assert finished_job(broker_stack, body["job_id"])["result"] == {"parts": 3, "words": 6}

    roots = broker_stack.assert_tree(body["trace_id"], CHORD_TREE)
    headers = nodes_named(roots, "run/count_words")
    (callback,) = nodes_named(roots, "run/sum_counts")
    # The parent (matched above): the header task whose completion completed the chord, i.e. whichever
    # finished last. The links: the callback depends on every header task, not only on that one.
    assert sorted(callback.span.links) == sorted((node.span.trace_id, node.span.span_id) for node in headers)


# -------------------------------------------------------------------------------------------- countdown


def test_countdown_job_runs_later_in_the_same_trace(broker_stack: RunningStack):
    body = post(broker_stack, "/api/workflows/reminder", {"note": "call back", "delay_s": 1})
    finished_job(broker_stack, body["job_id"])

    (root,) = broker_stack.assert_tree(
        body["trace_id"],
        """
        gateway  SERVER    POST /api/workflows/reminder
        └─ gateway  PRODUCER  apply_async/send_reminder
           └─ worker  CONSUMER  run/send_reminder
        """,
    )
    producer = root.children[0].span
    consumer = root.children[0].children[0].span
    # The worker receives the message at once but holds it until its ETA: the job starts a second later.
    eta = datetime.fromisoformat(consumer.attributes["celery.eta"])
    assert abs(eta.timestamp() - producer.start_ns / 1e9 - 1.0) < 0.5
    assert consumer.start_ns >= eta.timestamp() * 1e9 - 100e6  # the timer may fire a little early


# ------------------------------------------------------------------------------ a job that queues a job


def test_job_queued_by_a_job_continues_its_trace(broker_stack: RunningStack):
    body = post(broker_stack, "/api/workflows/followup", {"note": "check the report"})
    followup_id = finished_job(broker_stack, body["job_id"])["result"]["followup_job_id"]
    finished_job(broker_stack, followup_id)

    broker_stack.assert_tree(
        body["trace_id"],
        """
        gateway  SERVER    POST /api/workflows/followup
        └─ gateway  PRODUCER  apply_async/plan_followup
           └─ worker  CONSUMER  run/plan_followup
              └─ worker  PRODUCER  apply_async/send_reminder
                 └─ worker  CONSUMER  run/send_reminder
        """,
    )


# ------------------------------------------------------------------------------ a job that calls users


def test_job_calling_users_reaches_users_in_the_same_trace(broker_stack: RunningStack):
    created = post(
        broker_stack, "/api/users", {"name": "Ada", "email": f"ada-{uuid.uuid4().hex[:6]}@example.org"}
    )
    body = post(broker_stack, f"/api/users/{created['user']['id']}/report")
    finished_job(broker_stack, body["job_id"])

    # The exact tree, not `…`: a wildcard would match before the users spans have arrived.
    broker_stack.assert_tree(body["trace_id"], REPORT_TREE)


# ------------------------------------------------------------- publishing by name, and from a second app

BY_NAME_TREE = """
    gateway  SERVER    POST /api/workflows/by-name
    └─ gateway  PRODUCER  apply_async/archive_note
       └─ worker  CONSUMER  run/archive_note
          └─ worker  PRODUCER  apply_async/send_reminder
             └─ worker  CONSUMER  run/send_reminder
"""


def test_the_gateway_has_no_task_object_for_the_job_it_sends_by_name():
    # What makes the next test a test of send_task by name: the gateway's process never registers the
    # task (only the worker loads services/worker/named_tasks.py), so the instrumentation finds no task.
    script = (
        "from services.gateway.app import create_app; import services.gateway.workflow_routes as routes; "
        "create_app(); from services.worker.celery_app import app; print(routes.ARCHIVE_TASK in app.tasks)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_send_task_by_name_and_a_second_app_stay_in_the_trace(broker_stack: RunningStack):
    body = post(broker_stack, "/api/workflows/by-name", {"note": "quarterly numbers"})
    reminder_id = finished_job(broker_stack, body["job_id"])["result"]["followup_job_id"]
    finished_job(broker_stack, reminder_id)

    (root,) = broker_stack.assert_tree(body["trace_id"], BY_NAME_TREE)
    gateway_producer = root.children[0].span
    second_app_producer = root.children[0].children[0].children[0].span
    # Published without a task object: the instrumentation names the span after the message's task name.
    assert gateway_producer.attributes["celery.task_name"] == "archive_note"
    assert gateway_producer.attributes["messaging.message.id"] == body["job_id"]
    assert second_app_producer.attributes["messaging.message.id"] == reminder_id


# ------------------------------------------------------------------------------------ a retried job

# The simulated mail server greylists this domain: the first delivery is deferred ("451 ... try again
# later"), Celery's autoretry publishes the same job again from inside the failed attempt's `run` span,
# and the second attempt succeeds. One trace, the retry a staircase like a chain (RETRY_TREE).


def test_greylisted_retry_is_retry_then_publish_then_success(broker_stack: RunningStack):
    body = post(
        broker_stack, "/api/users", {"name": "Ada", "email": f"ada-{uuid.uuid4().hex[:6]}@greylisted.example"}
    )
    assert finished_job(broker_stack, body["job_id"])["result"]["attempts"] == 2

    (root,) = broker_stack.assert_tree(body["trace_id"], RETRY_TREE)
    (first,) = [
        node
        for node in nodes_named([root], "run/send_welcome_email")
        if node.span.attributes.get("celery.state") == "RETRY"
    ]
    (republish,) = [node for node in first.children if node.span.kind == "PRODUCER"]
    (second,) = republish.children
    assert second.span.attributes["celery.state"] == "SUCCESS"
    # The same job (one message id), published twice: the retry is the job, not a new one.
    assert republish.span.attributes["messaging.message.id"] == body["job_id"]
    assert second.span.attributes["messaging.message.id"] == body["job_id"]
    # Why it was retried, on the attempt that failed (the instrumentation's task_retry receiver).
    assert "451 4.7.1 greylisted by greylisted.example" in first.span.attributes["celery.retry.reason"]
    assert "celery.retry.reason" not in second.span.attributes


# ------------------------------------------------------------------------------------------------- beat

BEAT_TREE = """
    beat  PRODUCER  apply_async/heartbeat
    └─ worker  CONSUMER  run/heartbeat
"""


def complete_beat_traces(stack: RunningStack, count: int, timeout: float = 20.0) -> dict[str, list[Span]]:
    """At least `count` heartbeat traces with both spans (beat ticks every second in these stacks)."""
    deadline = time.monotonic() + timeout
    while True:
        now = datetime.now(UTC)
        found = stack.traces.search("beat", now - timedelta(minutes=10), now + timedelta(minutes=1), limit=10)
        complete = {trace_id: spans for trace_id, spans in found.items() if len(spans) >= 2}
        if len(complete) >= count or time.monotonic() > deadline:
            return complete
        time.sleep(0.2)


def test_each_beat_run_is_a_trace_of_its_own(broker_stack: RunningStack):
    traces = complete_beat_traces(broker_stack, count=2)
    assert len(traces) >= 2, f"fewer than two complete heartbeat traces: {traces}"
    for spans in traces.values():
        (root,) = assert_trace_tree(spans, BEAT_TREE)
        # A true root, not an orphan: no request started it.
        assert root.span.parent_span_id == ""
    assert len({spans[0].trace_id for spans in traces.values()}) == len(traces)


# ------------------------------------------------------------------- what a Celery message carries (Redis)


# The same session stack as the Redis half of `broker_stack`: no extra start. MONITOR is Redis's, and
# the fault flags do not depend on the broker, so these run once.
redis_broker_only = pytest.mark.parametrize("broker_stack", ["redis"], indirect=True)


@redis_broker_only
def test_the_message_carries_the_producer_span_and_the_baggage(broker_stack: RunningStack):
    with pushed_messages(broker_stack.stack.redis_url) as messages:
        body = post(broker_stack, "/api/workflows/followup", headers={"baggage": "tracehop.tenant=acme"})
        wait_for(messages, 1)
    (message,) = [m for m in messages if m["headers"]["id"] == body["job_id"]]
    spans = broker_stack.traces.wait_for_trace(
        body["trace_id"], until=has_spans(("gateway", "PRODUCER")), timeout=30
    )
    (producer,) = [span for span in spans if span.name == "apply_async/plan_followup"]

    headers = message["headers"]
    version, trace_id, parent_id, _flags = headers["traceparent"].split("-")
    assert (version, trace_id, parent_id) == ("00", body["trace_id"], producer.span_id)
    assert headers["baggage"] == "tracehop.tenant=acme"
    assert headers["task"] == "plan_followup"
    assert decoded_body(message)[0] == ["check the report"]


# ------------------------------------------------------------------------------ fault flags (Redis)


@redis_broker_only
def test_a_fault_flag_slows_users_for_that_request_only(broker_stack: RunningStack):
    flagged = broker_stack.post_user(headers={"baggage": "tracehop.fault=users:delay=300ms"})
    assert flagged.status_code == 201
    spans = broker_stack.traces.wait_for_trace(
        flagged.json()["trace_id"], until=has_spans(("users", "SERVER"), ("gateway", "SERVER")), timeout=30
    )
    (users_server,) = [span for span in spans if span.service == "users" and span.kind == "SERVER"]
    assert users_server.duration_ns >= 300e6
    assert users_server.attributes["tracehop.fault.injected"] == "users:delay=300ms"
    (event,) = [attributes for name, attributes, _ in users_server.events if name == "fault injected"]
    assert event["fault.delay_ms"] == 300
    # The gateway's own span is slow only because it waited: no fault was injected there.
    (gateway_server,) = [span for span in spans if span.service == "gateway" and span.kind == "SERVER"]
    assert "tracehop.fault.injected" not in gateway_server.attributes


@redis_broker_only
def test_a_fault_flag_fails_the_job_of_that_request(broker_stack: RunningStack):
    body = post(broker_stack, "/api/workflows/followup", headers={"baggage": "tracehop.fault=worker:error"})
    job = broker_stack.wait_for_job(body["job_id"])
    assert job["state"] == "FAILURE"
    # Through the worker, the result backend and the gateway: the exception's message, said once.
    assert job["result"] == {
        "error": "InjectedFault",
        "message": "fault injected by baggage tracehop.fault: worker:error",
    }

    (root,) = broker_stack.assert_tree(
        body["trace_id"],
        """
        gateway  SERVER    POST /api/workflows/followup
        └─ gateway  PRODUCER  apply_async/plan_followup
           └─ worker  CONSUMER  run/plan_followup
        """,
    )
    consumer = root.children[0].children[0].span
    assert consumer.is_error and consumer.attributes["celery.state"] == "FAILURE"
    assert "fault injected" in [name for name, _, _ in consumer.events]
    assert not root.span.is_error  # the request itself was accepted (202)


def test_fault_flags_do_nothing_where_the_setting_is_off(running_stack: RunningStack):
    # The core stack runs with the services' default: TRACEHOP_FAULT_INJECTION unset.
    response = running_stack.post_user(headers={"baggage": "tracehop.fault=users:error"})
    assert response.status_code == 201
    spans = running_stack.traces.wait_for_trace(
        response.json()["trace_id"],
        until=has_spans(*WHOLE_TRACE),
        timeout=30,
    )
    assert not any("tracehop.fault.injected" in span.attributes for span in spans)
    assert not [span for span in spans if span.is_error]
