"""ONE request each, the exact span tree across real processes, read back through the query API.

These are the project's central claim: one trace crosses the HTTP call to users and the Celery hop to the
worker (and from there to users again). Remove the gateway's Celery instrumentation and the worker's
spans land in a trace of their own: these tests fail.
"""

from __future__ import annotations

import uuid

from tests.integration.conftest import RunningStack


def create_user(stack: RunningStack, domain: str = "example.org", headers: dict | None = None):
    email = f"user-{uuid.uuid4().hex[:8]}@{domain}"
    response = stack.http.post(
        f"{stack.gateway}/api/users", json={"name": "Ada Lovelace", "email": email}, headers=headers, timeout=10
    )
    assert response.status_code == 201, response.text
    return response


CREATE_USER_TREE = """
    gateway  SERVER    POST /api/users
    ├─ gateway  CLIENT    POST
    │  └─ users  SERVER    POST /users
    │     ├─ users  INTERNAL  auth_check
    │     ├─ users  CLIENT    INCRBY
    │     ├─ users  CLIENT    HSET
    │     └─ users  INTERNAL  serialize
    └─ gateway  PRODUCER  apply_async/send_welcome_email
       └─ worker  CONSUMER  run/send_welcome_email
"""


def test_create_user_is_one_trace_across_users_and_worker(running_stack: RunningStack):
    response = create_user(running_stack)
    body = response.json()
    trace_id = body["trace_id"]
    assert response.headers["traceresponse"].split("-")[1] == trace_id

    (root,) = running_stack.assert_tree(trace_id, CREATE_USER_TREE)
    # The traceresponse header names the gateway's SERVER span: a caller can find its place in the trace.
    assert response.headers["traceresponse"].split("-")[2] == root.span.span_id
    assert running_stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"


def test_report_job_reaches_users_again_from_the_worker(running_stack: RunningStack):
    user_id = create_user(running_stack).json()["user"]["id"]
    response = running_stack.http.post(f"{running_stack.gateway}/api/users/{user_id}/report", timeout=10)
    assert response.status_code == 202
    body = response.json()

    job = running_stack.wait_for_job(body["job_id"])
    assert job["state"] == "SUCCESS" and job["result"]["user_id"] == user_id
    running_stack.assert_tree(
        body["trace_id"],
        """
        gateway  SERVER    POST /api/users/<user_id>/report
        └─ gateway  PRODUCER  apply_async/generate_report
           └─ worker  CONSUMER  run/generate_report
              └─ worker  CLIENT    GET
                 └─ users  SERVER    GET /users/<int:user_id>
                    ├─ users  INTERNAL  auth_check
                    ├─ users  CLIENT    HGETALL
                    └─ users  INTERNAL  serialize
        """,
    )


def test_retried_job_keeps_both_attempts_in_the_same_trace(running_stack: RunningStack):
    # The simulated mail server greylists this domain: the first delivery is deferred, the retry succeeds.
    body = create_user(running_stack, domain="greylisted.example").json()
    assert running_stack.wait_for_job(body["job_id"])["state"] == "SUCCESS"

    (root,) = running_stack.assert_tree(
        body["trace_id"],
        """
        gateway  SERVER    POST /api/users
        ├─ gateway  CLIENT    POST
        │  └─ users  SERVER    POST /users
        │     ├─ users  INTERNAL  auth_check
        │     ├─ users  CLIENT    INCRBY
        │     ├─ users  CLIENT    HSET
        │     └─ users  INTERNAL  serialize
        └─ gateway  PRODUCER  apply_async/send_welcome_email
           └─ worker  CONSUMER  run/send_welcome_email
              └─ worker  PRODUCER  apply_async/send_welcome_email
                 └─ worker  CONSUMER  run/send_welcome_email
        """,
    )
    first_attempt = root.children[1].children[0]
    second_attempt = first_attempt.children[0].children[0]
    # A retry is not an error: Celery's state says what happened to each attempt.
    assert first_attempt.span.attributes["celery.state"] == "RETRY"
    assert second_attempt.span.attributes["celery.state"] == "SUCCESS"


def test_outside_traceparent_is_continued(running_stack: RunningStack):
    outside_trace, outside_parent = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    response = create_user(running_stack, headers={"traceparent": f"00-{outside_trace}-{outside_parent}-01"})
    assert response.json()["trace_id"] == outside_trace

    (root,) = running_stack.assert_tree(outside_trace, CREATE_USER_TREE)
    assert root.span.parent_span_id == outside_parent


def test_callers_baggage_reaches_the_worker(running_stack: RunningStack):
    response = create_user(running_stack, headers={"baggage": "tracehop.tenant=acme,unrelated=x"})
    spans = running_stack.wait_for_spans(response.json()["trace_id"], count=9)
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
    for service in ("gateway", "users", "worker"):
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
        "worker", lambda line: line.get("trace_id") == trace_id and line["message"] == "welcome e-mail delivered"
    )
    assert delivered and delivered[0]["user_id"] == body["user"]["id"]
