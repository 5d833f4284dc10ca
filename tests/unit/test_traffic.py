"""`make traffic`: the request mix, trace ids read from answers, and the file the run is saved to."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
import requests

from tracehop.stack.config import free_port
from tracehop.traffic import (
    EXPECTED_STATUS,
    TrafficError,
    TrafficRecord,
    TrafficRun,
    plan_requests,
    save_traffic,
    trace_id_of,
)


def make_response(method: str, url: str, status: int, body: Any = None, headers: dict | None = None):
    response = requests.Response()
    response.status_code = status
    response._content = b"" if body is None else json.dumps(body).encode()
    response.headers.update(headers or {})
    response.request = requests.Request(method, url).prepare()
    return response


class FakeGateway(requests.Session):
    """Answers like the gateway: users are numbered, jobs get ids, every answer has a trace id."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, Any]] = []
        self.keys: list[str | None] = []
        self.drop_next_create = False
        self.users: set[str] = set()
        self.ids = itertools.count(1)

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        path = url.split("8080", 1)[1]
        self.sent.append((method, path, kwargs.get("json")))
        trace_id = f"{next(self.ids):032x}"
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/api/users":
            self.keys.append((kwargs.get("headers") or {}).get("Idempotency-Key"))
            if self.drop_next_create:
                self.drop_next_create = False
                raise requests.ConnectionError("connection dropped")
            user_id = str(len(self.users) + 1)
            self.users.add(user_id)
            body = {"user": {"id": user_id}, "job_id": f"job-{user_id}", "trace_id": trace_id}
            return make_response(method, url, 201, body)
        if method == "POST" and parts[-1] == "report":
            return make_response(method, url, 202, {"job_id": f"report-{parts[2]}", "trace_id": trace_id})
        if parts[1] == "jobs":
            # No trace id in this body: it must come from the traceresponse header.
            headers = {"traceresponse": f"00-{trace_id}-00f067aa0ba902b7-01"}
            return make_response(method, url, 200, {"job_id": parts[2], "state": "SUCCESS"}, headers)
        if parts[2] in self.users:
            return make_response(
                method, url, 200, {"id": parts[2]}, {"traceresponse": f"00-{trace_id}-{'1' * 16}-01"}
            )
        return make_response(
            method, url, 404, {"error": "not_found", "message": "no user", "trace_id": trace_id}
        )


def test_the_mix_writes_reads_misses_reports_and_polls() -> None:
    plan = plan_requests(30)

    counts = {kind: plan.count(kind) for kind in EXPECTED_STATUS}
    assert counts == {"create": 9, "get": 6, "missing": 3, "report": 6, "job": 6}
    assert plan[0] == "create"


def test_a_run_against_the_gateway_gets_a_trace_id_for_every_request() -> None:
    gateway = FakeGateway()
    run = TrafficRun("http://127.0.0.1:8080", session=gateway, seed=1)

    records = [run.send(kind) for kind in plan_requests(30)]

    assert len(records) == 30
    assert all(record.as_expected for record in records), [r for r in records if not r.as_expected]
    assert len({record.trace_id for record in records}) == 30
    emails = [body["email"] for method, _, body in gateway.sent if method == "POST" and body]
    assert emails[0].endswith("@greylisted.example")
    assert not any(email.endswith("@greylisted.example") for email in emails[1:])
    polled = [path for method, path, _ in gateway.sent if path.startswith("/api/jobs/")]
    assert polled[0] == "/api/jobs/job-1"


def test_every_create_sends_its_own_idempotency_key_and_a_dropped_one_is_retried_with_it() -> None:
    gateway = FakeGateway()
    run = TrafficRun("http://127.0.0.1:8080", session=gateway, seed=1)
    run.send("create")
    gateway.drop_next_create = True
    record = run.send("create")
    assert record.status == 201
    first, dropped, retried = gateway.keys
    assert first and dropped and first != dropped and retried == dropped


def test_trace_id_from_the_body_or_else_the_traceresponse_header() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    in_body = make_response("GET", "http://gw/x", 404, {"trace_id": trace})
    in_header = make_response(
        "GET", "http://gw/x", 200, {"state": "PENDING"}, {"traceresponse": f"00-{trace}-b7ad6b7169203331-01"}
    )
    nowhere = make_response("GET", "http://gw/x", 200, ["not", "a", "dict"])

    assert trace_id_of(in_body) == trace
    assert trace_id_of(in_header) == trace
    assert trace_id_of(nowhere) == ""


def test_an_unreachable_gateway_is_a_clear_error() -> None:
    run = TrafficRun(f"http://127.0.0.1:{free_port()}")

    with pytest.raises(TrafficError, match=r"does not answer .* \(make up\)"):
        run.send("create")


def test_a_run_is_saved_with_every_request_and_its_trace_id(tmp_path: Path) -> None:
    records = [
        TrafficRecord("POST", "/api/users", 201, "a" * 32, expected_status=201, note="ada@example.org"),
        TrafficRecord("GET", "/api/users/2", 404, "b" * 32, expected_status=200),
    ]
    saved = tmp_path / "var" / "last_traffic.json"

    save_traffic(saved, "http://127.0.0.1:8080", records)

    document = json.loads(saved.read_text())
    assert document["base_url"] == "http://127.0.0.1:8080"
    assert [(r["method"], r["path"], r["status"], r["trace_id"]) for r in document["requests"]] == [
        ("POST", "/api/users", 201, "a" * 32),
        ("GET", "/api/users/2", 404, "b" * 32),
    ]
