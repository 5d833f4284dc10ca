"""Parent or link: with TRACEHOP_CELERY_SPAN_LINKS=1 a job's CONSUMER span starts a NEW trace, linked to
the PRODUCER span that published it (the instrumentation's `use_span_links=True`), instead of being its
child. Both shapes asserted exactly: the request's trace ends at the PRODUCER, the job's trace starts at the
CONSUMER, and what the job does (its call to users) stays in the job's trace. `make trace` follows the
link either way. The parent shape is asserted everywhere else (test_core_traces, test_celery_shapes).

The broker does not matter here (the link is made from the same message headers either way): Redis only.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration.stack import SHAPES_ENV, RunningStack, private_stack
from tracehop.traces.links import incoming_links
from tracehop.traces.query import Span

REQUEST_TREE = """
    gateway  SERVER    POST /api/users
    ├─ gateway  CLIENT    POST
    │  └─ users  SERVER    POST /users
    │     ├─ users  INTERNAL  auth_check
    │     ├─ users  INTERNAL  UserStore.create
    │     │  ├─ users  CLIENT    INCRBY
    │     │  └─ users  CLIENT    HSET
    │     └─ users  INTERNAL  serialize
    └─ gateway  PRODUCER  apply_async/send_welcome_email
"""
WELCOME_JOB_TREE = """
    worker  CONSUMER  run/send_welcome_email
    └─ worker  INTERNAL  deliver_welcome_email
"""
REPORT_REQUEST_TREE = """
    gateway  SERVER    POST /api/users/<user_id>/report
    └─ gateway  PRODUCER  apply_async/generate_report
"""
# The job's call to users continues the JOB's trace: the requests instrumentation injects the current
# context, and the current span is the job's CONSUMER span, root of its own trace.
REPORT_JOB_TREE = """
    worker  CONSUMER  run/generate_report
    └─ worker  INTERNAL  build_report
       └─ worker  CLIENT    GET
          └─ users  SERVER    GET /users/<int:user_id>
             ├─ users  INTERNAL  auth_check
             ├─ users  INTERNAL  UserStore.get
             │  └─ users  CLIENT    HGETALL
             └─ users  INTERNAL  serialize
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = {**SHAPES_ENV, "TRACEHOP_CELERY_SPAN_LINKS": "1"}
    with private_stack(tmp_path_factory.mktemp("links"), env) as running:
        yield running


def _post(stack: RunningStack, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
    response = stack.http.post(f"{stack.gateway}{path}", json=body or {}, headers=headers, timeout=30)
    assert response.status_code in (201, 202), response.text
    return response.json()


def _create_user(stack: RunningStack, headers: dict | None = None) -> dict:
    return _post(
        stack, "/api/users", {"name": "Ada", "email": f"ada-{uuid.uuid4().hex[:6]}@example.org"}, headers
    )


def _job_trace(stack: RunningStack, request_spans: list[Span], expected: str) -> tuple[Span, str]:
    """The job's trace: the one whose CONSUMER span links to this request's PRODUCER span (found as
    `make trace` finds it), asserted to have exactly the `expected` tree. Returns the link's source."""
    (producer,) = [span for span in request_spans if span.kind == "PRODUCER"]
    deadline = time.monotonic() + 30  # the job's spans arrive after the request's: poll, with a deadline
    while True:
        links = [
            link
            for link in incoming_links(stack.traces, request_spans)
            if link.target_span_id == producer.span_id
        ]
        if links or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(links) == 1, f"{len(links)} traces link to the PRODUCER span {producer.span_id}: {links}"
    (root,) = stack.assert_tree(links[0].source.trace_id, expected)
    return root.span, links[0].source.trace_id


def _both_traces(
    stack: RunningStack, trace_id: str, request_tree: str, job_tree: str
) -> tuple[list[Span], Span, str]:
    """The job's trace first (found through its link: its spans have arrived), then the request's trace,
    exactly. In this order a CONSUMER span wrongly in the request's trace cannot go unseen for arriving
    after the request's spans. Returns the request's spans, the job's CONSUMER span and its trace id."""
    spans = stack.traces.wait_for_trace(
        trace_id, until=lambda found: any(span.kind == "PRODUCER" for span in found), timeout=30
    )
    consumer, job_trace_id = _job_trace(stack, spans, job_tree)
    request_spans = [
        node.span for root in stack.assert_tree(trace_id, request_tree) for _, node in root.walk()
    ]
    return request_spans, consumer, job_trace_id


def test_the_request_trace_ends_at_the_producer(stack: RunningStack):
    body = _create_user(stack)
    assert stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    request_spans, _, _ = _both_traces(stack, body["trace_id"], REQUEST_TREE, WELCOME_JOB_TREE)
    (root,) = [span for span in request_spans if span.kind == "SERVER" and span.service == "gateway"]
    assert root.parent_span_id == ""


def test_the_job_starts_a_new_trace_linked_to_the_producer(stack: RunningStack):
    body = _create_user(stack)
    assert stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    request_spans, consumer, job_trace_id = _both_traces(
        stack, body["trace_id"], REQUEST_TREE, WELCOME_JOB_TREE
    )
    (producer,) = [span for span in request_spans if span.kind == "PRODUCER"]
    assert job_trace_id != body["trace_id"]
    # A true root (no parent), with exactly one link: the PRODUCER span of the request that queued it.
    assert consumer.parent_span_id == ""
    assert consumer.links == [(body["trace_id"], producer.span_id)]
    assert consumer.attributes["messaging.message.id"] == body["job_id"]


def test_the_jobs_call_to_users_stays_in_the_jobs_trace(stack: RunningStack):
    created = _create_user(stack)
    body = _post(stack, f"/api/users/{created['user']['id']}/report")
    assert stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    _, consumer, _ = _both_traces(stack, body["trace_id"], REPORT_REQUEST_TREE, REPORT_JOB_TREE)
    assert consumer.parent_span_id == ""


def test_baggage_does_not_cross_a_link(stack: RunningStack):
    # Link mode extracts the message's context only for the link: it is not attached, so the caller's
    # baggage (and a fault flag riding in it) does not reach the job. Parent mode carries it
    # (test_core_traces::test_callers_baggage_reaches_the_worker).
    body = _create_user(stack, headers={"baggage": "tracehop.tenant=acme"})
    assert stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    request_spans, consumer, _ = _both_traces(stack, body["trace_id"], REQUEST_TREE, WELCOME_JOB_TREE)
    (producer,) = [span for span in request_spans if span.kind == "PRODUCER"]
    assert producer.attributes["tracehop.tenant"] == "acme"
    assert "tracehop.tenant" not in consumer.attributes


def _make_trace(stack: RunningStack, trace_id: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tracehop", "trace", trace_id, "--query-url", stack.stack.urls["query"]],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_trace_follows_the_link_both_ways(stack: RunningStack):
    created = _create_user(stack)
    body = _post(stack, f"/api/users/{created['user']['id']}/report")
    assert stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    _, _, job_trace_id = _both_traces(stack, body["trace_id"], REPORT_REQUEST_TREE, REPORT_JOB_TREE)

    # From the request: its own waterfall, then the job's trace it was linked from.
    shown = _make_trace(stack, body["trace_id"])
    assert f"trace {body['trace_id']}" in shown
    assert (
        f"linked: worker CONSUMER run/generate_report (trace {job_trace_id}) links to "
        f"gateway PRODUCER apply_async/generate_report (trace {body['trace_id']})"
    ) in shown
    assert shown.index(f"trace {job_trace_id}  ·") > shown.index("linked:")
    assert "SERVER    GET /users/<int:user_id>" in shown.partition("linked:")[2]

    # From the job: the link back into the request's trace.
    shown = _make_trace(stack, job_trace_id)
    assert (
        shown.index(f"trace {job_trace_id}  ·")
        < shown.index("linked:")
        < shown.index(f"trace {body['trace_id']}  ·")
    )
