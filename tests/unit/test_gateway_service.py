"""gateway: API behaviour, JSON errors, and context propagation into HTTP calls and Celery messages.

users runs for real over HTTP (in a thread of this process) and the broker is a real Redis-protocol
server, so what these tests see is what a real request does — only the processes are merged into one.
"""

from __future__ import annotations

import pytest

from tests.unit.conftest import as_query_spans, queued_messages
from tracehop.stack.config import free_port
from tracehop.traces.tree import assert_trace_tree


def test_create_user_answers_user_job_and_trace(client, broker):
    response = client.post("/api/users", json={"name": "Ada", "email": "ada@example.org"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["user"]["name"] == "Ada"
    assert len(body["trace_id"]) == 32
    assert body["trace_id"] in response.headers["traceresponse"]
    (message,) = queued_messages(broker)
    assert message["headers"]["task"] == "send_welcome_email"
    assert message["headers"]["id"] == body["job_id"]


def test_create_user_span_tree_crosses_http(client, spans):
    client.post("/api/users", json={"name": "Ada", "email": "ada@example.org"})
    # One process here, so one service column; the integration tests assert the real services. The LPUSH
    # is the broker write, visible only because users' Redis instrumentation patches redis-py for the whole
    # process: the reason the real gateway and worker never instrument Redis (it would trace every poll).
    # SET ZADD is the job ledger's record of the accepted job (services/worker/job_ledger.py).
    assert_trace_tree(
        as_query_spans(spans.get_finished_spans(), "test"),
        """
        test  SERVER    POST /api/users
        ├─ test  CLIENT    POST
        │  └─ test  SERVER    POST /users
        │     ├─ test  INTERNAL  auth_check
        │     ├─ test  INTERNAL  UserStore.create
        │     │  ├─ test  CLIENT    INCRBY
        │     │  └─ test  CLIENT    HSET
        │     └─ test  INTERNAL  serialize
        └─ test  PRODUCER  apply_async/send_welcome_email
           ├─ test  CLIENT    LPUSH
           └─ test  CLIENT    SET ZADD
        """,
    )


def test_celery_message_carries_the_producer_span_context(client, broker, spans):
    client.post(
        "/api/users", json={"name": "Ada", "email": "ada@example.org"}, headers={"baggage": "tracehop.k=v1"}
    )
    (producer,) = [s for s in spans.get_finished_spans() if s.kind.name == "PRODUCER"]
    (message,) = queued_messages(broker)
    _, trace_id, parent_id, _ = message["headers"]["traceparent"].split("-")
    assert trace_id == f"{producer.context.trace_id:032x}"
    assert parent_id == f"{producer.context.span_id:016x}"
    assert "tracehop.k=v1" in message["headers"]["baggage"]


def test_incoming_traceparent_is_continued(client):
    outside = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = client.get("/api/users/1", headers={"traceparent": outside})
    assert response.get_json()["trace_id"] == "0af7651916cd43dd8448eb211c80319c"


def test_missing_user_is_404_json(client):
    response = client.get("/api/users/999999")
    assert response.status_code == 404
    body = response.get_json()
    assert body["error"] == "user_not_found" and len(body["trace_id"]) == 32


def test_users_down_is_503_and_client_span_records_the_error(make_gateway, broker, spans):
    client = make_gateway(USERS_URL=f"http://127.0.0.1:{free_port()}").test_client()
    response = client.post("/api/users", json={"name": "Ada", "email": "ada@example.org"})
    assert response.status_code == 503
    assert response.get_json()["error"] == "users_unavailable"
    (client_span,) = [s for s in spans.get_finished_spans() if s.kind.name == "CLIENT"]
    assert client_span.status.status_code.name == "ERROR"
    assert any(event.name == "exception" for event in client_span.events)
    assert queued_messages(broker) == []  # nothing queued for a user that was never created

    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["users"] is False


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "error"),
    [
        (
            "post",
            "/api/users",
            {"data": "{not json", "content_type": "application/json"},
            400,
            "invalid_body",
        ),
        (
            "post",
            "/api/users",
            {"data": "name=Ada", "content_type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            "post",
            "/api/users",
            {"json": {"name": "Ada", "email": "ada@example.org", "x": 1}},
            400,
            "invalid_body",
        ),
        ("post", "/api/users", {"json": {"name": 7, "email": "ada@example.org"}}, 400, "invalid_name"),
        (
            "post",
            "/api/users",
            {"json": {"name": "Ada", "email": "x" * 300 + "@a.org"}},
            400,
            "invalid_email",
        ),
        ("post", "/api/users", {"data": "x" * 20000, "content_type": "application/json"}, 413, None),
        ("get", "/api/users/abc", {}, 400, "invalid_user_id"),
        ("get", "/api/users/-1", {}, 400, "invalid_user_id"),
        ("get", "/api/users/١٢", {}, 400, "invalid_user_id"),  # non-ASCII digits
        ("post", "/api/users/0/report", {}, 400, "invalid_user_id"),
        ("get", "/api/jobs/not-a-uuid", {}, 400, "invalid_job_id"),
        ("get", "/nope", {}, 404, "not_found"),
        ("delete", "/api/users", {}, 405, "method_not_allowed"),
    ],
)
def test_bad_input_is_a_json_4xx_with_trace_id(client, method, path, kwargs, status, error):
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert set(body) == {"error", "message", "trace_id"}
    assert len(body["trace_id"]) == 32
    if error:
        assert body["error"] == error
    assert "Traceback" not in response.get_data(as_text=True)


def test_report_is_queued_with_202(client, broker):
    response = client.post("/api/users/1/report")
    assert response.status_code == 202
    (message,) = queued_messages(broker)
    assert message["headers"]["task"] == "generate_report"


def test_unknown_job_is_pending(client):
    response = client.get("/api/jobs/7c9e6679-7425-40de-944b-e07fc1f90ae7")
    assert response.status_code == 200
    assert response.get_json()["state"] == "PENDING"
