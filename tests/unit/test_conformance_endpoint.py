"""POST /test/tracecontext: the W3C harness protocol, and never an open proxy."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.gateway.conformance import MAX_CALLS, is_loopback_url

CALLER = "00-12345678901234567890123456789012-1234567890123456-01"


class Harness:
    """A stand-in for the harness' callback server: records what arrives, may answer with a redirect."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], object]] = []
        self.redirect_to: str | None = None
        harness = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                harness.received.append((self.path, dict(self.headers), json.loads(self.rfile.read(length))))
                self.send_response(302 if harness.redirect_to else 200)
                if harness.redirect_to:
                    self.send_header("Location", harness.redirect_to)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def harness() -> Iterator[Harness]:
    harness = Harness()
    thread = threading.Thread(target=harness.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield harness
    harness.server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def enabled(make_gateway):
    return make_gateway(TRACECONTEXT_TEST=True).test_client()


def test_absent_unless_switched_on(client):
    response = client.post("/test/tracecontext", json=[])
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def test_each_call_carries_the_propagated_context(enabled, harness):
    calls = [
        {"url": f"{harness.url}/0", "arguments": [{"url": "x", "arguments": []}]},
        {"url": f"{harness.url}/1"},
    ]
    response = enabled.post(
        "/test/tracecontext", json=calls, headers={"traceparent": CALLER, "tracestate": "a@b=1"}
    )
    assert response.status_code == 200
    assert [r["status"] for r in response.get_json()["results"]] == [200, 200]
    (path0, headers0, body0), (path1, headers1, body1) = harness.received
    assert (path0, body0, path1, body1) == ("/0", [{"url": "x", "arguments": []}], "/1", [])
    for headers in (headers0, headers1):
        version, trace_id, parent_id, _ = headers["traceparent"].split("-")
        assert (version, trace_id) == ("00", "12345678901234567890123456789012")
        assert parent_id != "1234567890123456"  # a child of our span, not the caller's
        assert headers["tracestate"] == "a@b=1"


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:7777/",
        "http://example.org/",
        "http://localhost:7777/",  # a name could resolve anywhere: IP literals only
        "http://127.0.0.1@example.org/",  # user-info trick: the host is example.org
        "http://user:pw@127.0.0.1:7777/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:7777/",
        "http://127.0.0.1:99999/",
        "http://[::ffff:10.0.0.1]/",
        "//127.0.0.1/",
    ],
)
def test_only_loopback_ip_urls_are_called_and_a_bad_one_stops_all(enabled, harness, url):
    response = enabled.post("/test/tracecontext", json=[{"url": harness.url, "arguments": []}, {"url": url}])
    assert response.status_code == 400 and response.get_json()["error"] == "url_not_allowed"
    assert harness.received == []  # refused whole: not even the loopback call before it was made


def test_loopback_forms_that_are_allowed():
    assert is_loopback_url("http://127.0.0.1:7777/x")
    assert is_loopback_url("http://127.1.2.3/")
    assert is_loopback_url("http://[::1]:7777/")


def test_redirects_are_not_followed(enabled, harness):
    harness.redirect_to = "http://127.0.0.1:1/elsewhere"
    response = enabled.post("/test/tracecontext", json=[{"url": harness.url, "arguments": []}])
    assert response.get_json()["results"] == [{"url": harness.url, "status": 302}]
    assert len(harness.received) == 1


@pytest.mark.parametrize(
    "body", ["{}", "[1]", '[{"url": 7}]', "not json", json.dumps([{"url": "x"}] * (MAX_CALLS + 1))]
)
def test_malformed_instructions_are_400(enabled, body):
    response = enabled.post("/test/tracecontext", data=body, content_type="application/json")
    assert response.status_code == 400 and set(response.get_json()) == {"error", "message", "trace_id"}


def test_an_unreachable_url_is_reported_not_raised(enabled):
    from tracehop.stack.config import free_port

    response = enabled.post("/test/tracecontext", json=[{"url": f"http://127.0.0.1:{free_port()}/"}])
    assert response.status_code == 200
    assert response.get_json()["results"][0]["error"] == "ConnectionError"
