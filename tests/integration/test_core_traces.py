"""ONE request each, the exact span tree across real processes, read back through the query API.

These are the project's central claim: one trace crosses the HTTP call to users and the Celery hop to the
worker (and from there to users again). Remove the gateway's Celery instrumentation and the worker's
spans land in a trace of their own: these tests fail.
"""

from __future__ import annotations

import uuid

from services.web.settings import SERVICES
from tests.integration.expected_trees import CREATE_USER_SPANS, CREATE_USER_TREE, REPORT_TREE, RETRY_TREE
from tests.integration.stack import RunningStack
from tracehop.traces.tree import Node


def create_user(stack: RunningStack, domain: str = "example.org", headers: dict | None = None):
    response = stack.post_user(name="Ada Lovelace", domain=domain, headers=headers)
    assert response.status_code == 201, response.text
    return response


def spans_named(roots: list[Node], name: str) -> list[Node]:
    return [node for root in roots for _, node in root.walk() if node.span.name == name]


def events(node: Node) -> dict[str, dict]:
    """A span's events by name (pattern 3: the log lines written while it was current)."""
    return {name: attributes for name, attributes, _ in node.span.events}


def test_create_user_is_one_trace_across_users_and_worker(running_stack: RunningStack):
    response = create_user(running_stack)
    body = response.json()
    trace_id = body["trace_id"]
    assert response.headers["traceresponse"].split("-")[1] == trace_id

    roots = running_stack.assert_tree(trace_id, CREATE_USER_TREE)
    # The traceresponse header names the gateway's SERVER span: a caller can find its place in the trace.
    assert response.headers["traceresponse"].split("-")[2] == roots[0].span.span_id
    assert running_stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"

    # Log lines of users and of the worker's job are events on the span that was current when they
    # were written: the store's line on the store's span, the delivery's on the delivery's span.
    (create,) = spans_named(roots, "UserStore.create")
    assert events(create)["user created"] == {"log.severity": "INFO", "user_id": body["user"]["id"]}
    assert create.span.attributes["arg.email"].startswith(body["user"]["email"][0] + "***@")
    (deliver,) = spans_named(roots, "deliver_welcome_email")
    assert events(deliver)["welcome e-mail delivered"]["user_id"] == body["user"]["id"]
    assert deliver.span.attributes["arg.recipient_domain"] == "example.org"
    # The access line says what the SERVER span already says: it is not an event.
    (users_server,) = spans_named(roots, "POST /users")
    assert "request" not in events(users_server)


def test_report_job_reaches_users_again_from_the_worker(running_stack: RunningStack):
    user_id = create_user(running_stack).json()["user"]["id"]
    response = running_stack.http.post(f"{running_stack.gateway}/api/users/{user_id}/report", timeout=10)
    assert response.status_code == 202
    body = response.json()

    job = running_stack.wait_for_job(body["job_id"])
    assert job["state"] == "SUCCESS" and job["result"]["user_id"] == user_id
    roots = running_stack.assert_tree(
        body["trace_id"],
        REPORT_TREE,
    )
    (build,) = spans_named(roots, "build_report")
    assert events(build)["report ready"] == {"log.severity": "INFO", "user_id": user_id}
    (get,) = spans_named(roots, "UserStore.get")
    assert events(get)["fetching user"]["user_id"] == user_id


def test_retried_job_keeps_both_attempts_in_the_same_trace(running_stack: RunningStack):
    # The simulated mail server greylists this domain: the first delivery is deferred, the retry succeeds.
    body = create_user(running_stack, domain="greylisted.example").json()
    assert running_stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"

    roots = running_stack.assert_tree(body["trace_id"], RETRY_TREE)
    first_attempt, second_attempt = sorted(
        spans_named(roots, "run/send_welcome_email"), key=lambda n: n.span.start_ns
    )
    # A retry is not an error: Celery's state says what happened to each attempt.
    assert first_attempt.span.attributes["celery.state"] == "RETRY"
    assert second_attempt.span.attributes["celery.state"] == "SUCCESS"
    # The deferred delivery itself did fail: its span is the error, with the log line that says why.
    first_delivery, second_delivery = sorted(
        spans_named(roots, "deliver_welcome_email"), key=lambda n: n.span.start_ns
    )
    assert first_delivery.span.is_error and not second_delivery.span.is_error
    assert events(first_delivery)["delivery deferred: greylisted"]["log.severity"] == "WARNING"


def test_outside_traceparent_is_continued(running_stack: RunningStack):
    outside_trace, outside_parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = create_user(running_stack, headers={"traceparent": f"00-{outside_trace}-{outside_parent}-01"})
    assert response.json()["trace_id"] == outside_trace

    (root,) = running_stack.assert_tree(outside_trace, CREATE_USER_TREE)
    assert root.span.parent_span_id == outside_parent


def test_callers_baggage_reaches_the_worker(running_stack: RunningStack):
    response = create_user(running_stack, headers={"baggage": "tracehop.tenant=acme,unrelated=x"})
    spans = running_stack.wait_for_spans(response.json()["trace_id"], count=CREATE_USER_SPANS)
    (consumer,) = [s for s in spans if s.kind == "CONSUMER"]
    (users_server,) = [s for s in spans if s.service == "users" and s.kind == "SERVER"]
    assert consumer.attributes.get("tracehop.tenant") == "acme"
    assert users_server.attributes.get("tracehop.tenant") == "acme"
    # Only our own namespace becomes span attributes.
    assert "unrelated" not in consumer.attributes


def test_every_service_logs_lines_with_the_trace_id(running_stack: RunningStack):
    body = create_user(running_stack).json()
    trace_id = body["trace_id"]
    assert running_stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"
    for service in SERVICES:
        lines = running_stack.wait_for_log_lines(service, lambda line: line.get("trace_id") == trace_id)
        assert lines, f"no line of logs/{service}.log carries trace id {trace_id}"
        for line in lines:
            assert line["service"] == service
            assert len(line["span_id"]) == 16
    (access,) = [
        line
        for line in running_stack.log_lines("gateway")
        if line.get("trace_id") == trace_id and line["message"] == "request"
    ]
    assert access["route"] == "/api/users" and access["status"] == 201 and access["duration_ms"] > 0
    delivered = running_stack.wait_for_log_lines(
        "worker",
        lambda line: line.get("trace_id") == trace_id and line["message"] == "welcome e-mail delivered",
    )
    assert delivered and delivered[0]["user_id"] == body["user"]["id"]
