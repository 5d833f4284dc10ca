"""users: the API, the Redis store, and the span tree of one request (auth_check, Redis, serialize)."""

from __future__ import annotations

import pytest
from opentelemetry.trace import format_trace_id

from tests.unit.conftest import as_query_spans
from tracehop.traces.tree import assert_trace_tree

TOKEN = {"X-Service-Token": "test-token"}


def test_create_then_get_user(users_client):
    created = users_client.post("/users", json={"name": "Ada", "email": "ada@example.org"}, headers=TOKEN)
    assert created.status_code == 201
    user = created.get_json()
    assert user["name"] == "Ada" and user["email"] == "ada@example.org" and user["id"] > 0

    fetched = users_client.get(f"/users/{user['id']}", headers=TOKEN)
    assert fetched.status_code == 200
    assert fetched.get_json() == user


def test_create_user_span_tree(users_client, spans):
    users_client.post("/users", json={"name": "Ada", "email": "ada@example.org"}, headers=TOKEN)
    assert_trace_tree(
        as_query_spans(spans.get_finished_spans(), "users"),
        """
        users  SERVER    POST /users
        ├─ users  INTERNAL  auth_check
        ├─ users  INTERNAL  UserStore.create
        │  ├─ users  CLIENT    INCRBY
        │  └─ users  CLIENT    HSET
        └─ users  INTERNAL  serialize
        """,
    )


def test_store_spans_carry_their_arguments_and_log_lines(users_client, spans):
    user = users_client.post(
        "/users", json={"name": "Ada", "email": "ada@example.org"}, headers=TOKEN
    ).get_json()
    users_client.get(f"/users/{user['id']}", headers=TOKEN)
    finished = {s.name: s for s in spans.get_finished_spans()}
    create, get = finished["UserStore.create"], finished["UserStore.get"]
    # @traced: the e-mail address masked, the name skipped, self never recorded.
    assert dict(create.attributes) == {
        "code.function.name": "services.users.store.UserStore.create",
        "arg.email": "a***@example.org",
    }
    assert get.attributes["arg.user_id"] == user["id"]
    # The store's log lines are events on the store's spans, not on the request's.
    assert [(e.name, dict(e.attributes)) for e in create.events] == [
        ("user created", {"log.severity": "INFO", "user_id": user["id"]})
    ]
    assert [e.name for e in get.events] == ["fetching user"]
    # The access line duplicates the SERVER span's own attributes: it is not an event.
    servers = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"]
    assert servers and not [e for s in servers for e in s.events if e.name == "request"]


def test_auth_check_records_outcome_without_the_token(users_client, spans):
    users_client.get("/users/1", headers=TOKEN)
    (auth,) = [s for s in spans.get_finished_spans() if s.name == "auth_check"]
    assert auth.attributes["auth.outcome"] == "granted"
    assert "test-token" not in str(dict(auth.attributes))


def test_missing_token_is_401_json_with_trace_id(users_client, spans):
    response = users_client.post("/users", json={"name": "Ada", "email": "ada@example.org"})
    assert response.status_code == 401
    body = response.get_json()
    assert body["error"] == "unauthorized"
    assert len(body["trace_id"]) == 32
    (auth,) = [s for s in spans.get_finished_spans() if s.name == "auth_check"]
    assert auth.attributes["auth.outcome"] == "denied"
    assert auth.status.status_code.name == "ERROR"
    assert "service token rejected" in [e.name for e in auth.events]
    # Refused before touching the database.
    assert not [s for s in spans.get_finished_spans() if s.kind.name == "CLIENT"]


def test_wrong_token_is_401(users_client):
    response = users_client.get("/users/1", headers={"X-Service-Token": "test-tokeX"})
    assert response.status_code == 401


def test_unknown_user_is_404_json(users_client):
    response = users_client.get("/users/987654321", headers=TOKEN)
    assert response.status_code == 404
    assert response.get_json()["error"] == "user_not_found"


def test_invalid_body_is_400_json(users_client):
    for body in ({"name": "", "email": "a@b.org"}, {"name": "A", "email": "nope"}, {"name": "A"}, [1, 2]):
        response = users_client.post("/users", json=body, headers=TOKEN)
        assert response.status_code == 400, body
        assert set(response.get_json()) == {"error", "message", "trace_id"}


def test_every_response_carries_traceresponse(users_client):
    response = users_client.get("/users/1", headers=TOKEN)
    version, trace_id, span_id, flags = response.headers["traceresponse"].split("-")
    assert (version, len(trace_id), len(span_id), len(flags)) == ("00", 32, 16, 2)


@pytest.mark.parametrize(
    "path",
    [
        "/readyz",  # a probe path users does not serve: an ordinary 404, traced
        "/users/healthz",  # the instrumentation matches excluded URLs anywhere in the URL
        "/users/987654321?next=/metrics",
    ],
)
def test_errors_on_probe_like_paths_are_traced(users_client, spans, path):
    response = users_client.get(path, headers=TOKEN)
    assert response.status_code == 404
    trace_id = response.get_json()["trace_id"]
    assert len(trace_id) == 32
    assert response.headers["traceresponse"].split("-")[1] == trace_id
    assert {format_trace_id(s.context.trace_id) for s in spans.get_finished_spans()} == {trace_id}


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
def test_probes_and_scrapes_are_not_traced(users_client, spans, path):
    response = users_client.get(path)
    assert response.status_code == 200
    assert "traceresponse" not in response.headers
    assert spans.get_finished_spans() == ()


def test_metrics_endpoint_groups_by_url_rule(users_client):
    users_client.get("/users/1", headers=TOKEN)
    users_client.get("/users/2", headers=TOKEN)
    text = users_client.get("/metrics").get_data(as_text=True)
    assert 'url_rule="/users/<int:user_id>"' in text
    assert 'http_requests_total{method="GET",route="/users/<int:user_id>",status="200"}' in text
    assert "/users/1" not in text  # the raw path would explode the label set
