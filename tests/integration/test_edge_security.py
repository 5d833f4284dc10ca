"""The security edge on a private stack: trust boundary, baggage allow-list, service token, no leaked e-mails.

The stack is the one a public deployment would run: it does not trust callers' trace context
(TRACEHOP_TRUST_INCOMING_TRACE=false), passes on only one baggage key (TRACEHOP_BAGGAGE_ALLOWLIST), and
has the W3C conformance endpoint switched on to show it cannot be used as an open proxy. users records
the `baggage` and `tracestate` headers it receives on its SERVER span, so the tests can see exactly what
crossed from the gateway.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.integration.stack import WHOLE_TRACE, RunningStack, has_spans, start_private_stack
from tracehop.traces.query import Span

ENV = {
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_MAIL_MAX_RETRIES": "1",
    "TRACEHOP_TRUST_INCOMING_TRACE": "false",
    "TRACEHOP_BAGGAGE_ALLOWLIST": "tracehop.tenant",
    "TRACEHOP_TRACECONTEXT_TEST": "1",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "baggage,tracestate",
}
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_private_stack(tmp_path_factory.mktemp("edge-security"), ENV)
    try:
        yield running
    finally:
        running.http.close()
        running.stack.stop()


WHOLE = has_spans(*WHOLE_TRACE)


def test_an_untrusted_callers_trace_is_restarted_and_linked(stack):
    response = stack.post_user(
        f"e-{uuid.uuid4().hex[:6]}@example.org",
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "vendor=opaque"},
    )
    assert response.status_code == 201
    trace_id = response.json()["trace_id"]
    assert trace_id != CALLER_TRACE
    spans = stack.traces.wait_for_trace(trace_id, until=WHOLE, timeout=30)
    (root,) = [s for s in spans if s.kind == "SERVER" and s.service == "gateway"]
    assert root.parent_span_id == "" and root.links == [(CALLER_TRACE, CALLER_SPAN)]
    (users,) = [s for s in spans if s.kind == "SERVER" and s.service == "users"]
    assert "http.request.header.tracestate" not in users.attributes  # cleared with the restart


def test_only_allowed_baggage_reaches_users_and_the_worker(stack):
    baggage = "tracehop.tenant=acme,tracehop.role=admin,session=s3cr3t,tracehop.pad=" + "x" * 2000
    response = stack.post_user(f"b-{uuid.uuid4().hex[:6]}@example.org", headers={"baggage": baggage})
    assert response.status_code == 201
    spans = stack.traces.wait_for_trace(response.json()["trace_id"], until=WHOLE, timeout=30)
    (users,) = [s for s in spans if s.kind == "SERVER" and s.service == "users"]
    assert users.attributes["http.request.header.baggage"] == ["tracehop.tenant=acme"]
    (consumer,) = [s for s in spans if s.kind == "CONSUMER"]
    # BaggageSpanProcessor copies tracehop.* baggage onto spans: only the allowed key arrived.
    assert consumer.attributes.get("tracehop.tenant") == "acme"
    assert "tracehop.role" not in consumer.attributes and "tracehop.pad" not in consumer.attributes


@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_users_refuses_calls_without_the_service_token(stack, token):
    headers = {} if token is None else {"X-Service-Token": token}
    response = stack.http.get(f"{stack.stack.urls['users']}/users/1", headers=headers, timeout=10)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "unauthorized" and len(body["trace_id"]) == 32
    spans = stack.traces.wait_for_trace(
        body["trace_id"], until=lambda spans: any(s.name == "auth_check" for s in spans), timeout=30
    )
    (check,) = [s for s in spans if s.name == "auth_check"]
    assert check.attributes["auth.outcome"] == "denied" and check.is_error
    assert check.attributes["auth.token_present"] is bool(token)
    if token:
        assert token not in json.dumps([s.attributes for s in spans])  # the token is never recorded


def test_the_gateway_presents_the_token_and_auth_check_says_so(stack):
    response = stack.post_user(f"t-{uuid.uuid4().hex[:6]}@example.org")
    spans = stack.traces.wait_for_trace(
        response.json()["trace_id"],
        until=lambda spans: any(s.name == "auth_check" for s in spans),
        timeout=30,
    )
    (check,) = [s for s in spans if s.name == "auth_check"]
    assert check.attributes["auth.outcome"] == "granted" and not check.is_error
    assert "dev-service-token" not in json.dumps([s.attributes for s in spans])


class Receiver:
    """A loopback HTTP server that records the trace headers of what it receives."""

    def __init__(self) -> None:
        self.traceparents: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.traceparents.append(self.headers.get("traceparent", ""))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/callback"


def test_the_conformance_endpoint_calls_loopback_only(stack):
    receiver = Receiver()
    thread = threading.Thread(target=receiver.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        endpoint = f"{stack.gateway}/test/tracecontext"
        refused = stack.http.post(
            endpoint, json=[{"url": "http://198.51.100.7/", "arguments": []}], timeout=10
        )
        assert refused.status_code == 400 and refused.json()["error"] == "url_not_allowed"
        relayed = stack.http.post(endpoint, json=[{"url": receiver.url, "arguments": []}], timeout=10)
        assert relayed.status_code == 200 and relayed.json()["results"][0]["status"] == 200
        (traceparent,) = receiver.traceparents
        assert traceparent.split("-")[1] == relayed.headers["traceresponse"].split("-")[1]
    finally:
        receiver.server.shutdown()
        thread.join(timeout=5)


# ----------------------------------------------------------------------------------- personal data


def finished_job(spans: list[Span]) -> bool:
    """The job's last attempt has ended: a worker CONSUMER span in a final state (retries come before)."""
    return any(
        s.service == "worker" and s.kind == "CONSUMER" and s.attributes.get("celery.state") in FINAL_STATES
        for s in spans
    )


FINAL_STATES = ("SUCCESS", "FAILURE")


def send_traffic_with_personal_data(stack: RunningStack) -> tuple[list[str], dict[str, Callable]]:
    """Requests of every kind, each carrying a unique e-mail address (and the users a unique name)
    somewhere. Returns what was sent, and for the trace of each request what makes it complete."""
    sent: list[str] = []
    traces: dict[str, Callable[[list[Span]], bool]] = {}

    def address(domain: str = "example.org") -> str:
        sent.append(f"pii-{uuid.uuid4().hex[:10]}@{domain}")
        return sent[-1]

    def name() -> str:
        sent.append(f"Person{uuid.uuid4().hex[:10]}")
        return sent[-1]

    def answered(
        response: requests.Response, status: int, *spans: tuple[str, str], job: bool = False
    ) -> dict:
        assert response.status_code == status, response.text
        body = response.json()
        wanted = has_spans(("gateway", "SERVER"), *spans)
        traces[body["trace_id"]] = (lambda found: wanted(found) and finished_job(found)) if job else wanted
        return body

    gateway = stack.gateway
    jobs = []
    for domain in ("example.org", "greylisted.example", "maildown.example"):  # delivered, retried, failed
        user = {"name": name(), "email": address(domain)}
        created = stack.http.post(f"{gateway}/api/users", json=user, timeout=15)
        body = answered(created, 201, ("users", "SERVER"), job=True)
        jobs.append(body["job_id"])
        report = stack.http.post(f"{gateway}/api/users/{body['user']['id']}/report", timeout=10)
        jobs.append(answered(report, 202, ("users", "SERVER"), job=True)["job_id"])
        answered(
            stack.http.get(f"{gateway}/api/users/{body['user']['id']}", timeout=10), 200, ("users", "SERVER")
        )
    # Refused requests that carry an address: in the body, the path, the query string, the baggage.
    answered(stack.http.post(f"{gateway}/api/users", json={"name": "x" * 101, "email": address()}), 400)
    baggage = {"baggage": f"tracehop.tenant={address()}"}
    answered(stack.post_user(address(), headers=baggage), 201, ("users", "SERVER"), job=True)
    answered(stack.http.post(f"{gateway}/api/users", json={"name": "A", "email": address(), "x": 1}), 400)
    answered(stack.http.get(f"{gateway}/api/users/{address()}", timeout=10), 400)
    answered(stack.http.get(f"{gateway}/api/jobs/{jobs[0]}?email={address()}", timeout=10), 200)
    answered(stack.http.get(f"{gateway}/nowhere/{address()}", timeout=10), 404)
    for job_id in jobs:
        assert stack.wait_for_job(job_id, timeout=60)["state"] in FINAL_STATES
    return sent, traces


def all_exported_spans(stack: RunningStack, since: datetime) -> list[Span]:
    until = datetime.now(UTC) + timedelta(minutes=1)
    spans: dict[str, Span] = {}
    for service in stack.traces.services():
        for trace in stack.traces.search(service, since, until, limit=100_000).values():
            spans.update((span.span_id, span) for span in trace)
    return list(spans.values())


def test_no_personal_data_reaches_a_span_or_a_log_line(stack):
    sent, traces = send_traffic_with_personal_data(stack)
    # Every trace sent complete (its last job attempt included) before the scan: a late span is scanned too.
    for trace_id, complete in traces.items():
        stack.traces.wait_for_trace(trace_id, until=complete, timeout=60)
    # The private stack's trace store holds only this module's traffic: search all of it.
    spans = all_exported_spans(stack, since=datetime.now(UTC) - timedelta(hours=1))
    assert len(spans) > 50
    leaks = []
    for span in spans:
        text = json.dumps(
            [span.name, span.status_message, span.attributes, span.events, span.resource], default=str
        )
        leaks += [f"span {span.service}/{span.name}: {a}" for a in sent if a in text]
    log_files = [*stack.log_dir.glob("*.log"), *stack.stack.layout.var_dir.glob("*.out")]
    assert {path.name for path in log_files} >= {"gateway.log", "users.log", "worker.log"}
    for path in log_files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            leaks += [f"{path.name}:{number}: {line[:300]}" for a in sent if a in line]
    assert not leaks, "\n".join(leaks)
