"""`POST /test/tracecontext`: the endpoint the official W3C Trace Context test harness drives.

The harness (github.com/w3c/trace-context, `test/`) POSTs a JSON array of `{"url": ..., "arguments": [...]}`
with the trace-context headers under test; the service POSTs each `arguments` to its `url`, carrying the
context it propagates, and the harness checks what arrives. Run it with

    TRACEHOP_TRACECONTEXT_TEST=1 make up
    python test/test.py http://127.0.0.1:8080/test/tracecontext     # in a checkout of w3c/trace-context

An endpoint that POSTs wherever it is told is an open proxy, so it exists only when
TRACEHOP_TRACECONTEXT_TEST=1, calls only loopback IP addresses (the harness listens on 127.0.0.1), follows
no redirect, and takes a bounded number of calls per request.
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Flask, Response, current_app, jsonify

from services.web.http_errors import ApiError
from services.web.json_body import read_json_body

MAX_CALLS = 32
CALL_TIMEOUT_S = (1.0, 5.0)

blueprint = Blueprint("tracecontext_conformance", __name__)


def register_conformance_endpoint(app: Flask) -> None:
    """Add the endpoint when config TRACECONTEXT_TEST is true (TRACEHOP_TRACECONTEXT_TEST=1)."""
    if not app.config.get("TRACECONTEXT_TEST"):
        return
    session = requests.Session()
    session.trust_env = False  # no proxy from the environment: the calls must stay on this host
    app.extensions["conformance_session"] = session
    app.register_blueprint(blueprint)


def is_loopback_url(url: str) -> bool:
    """http(s) to a loopback IP literal (127.0.0.0/8 or ::1); a host name could resolve anywhere."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a malformed port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not host or parts.username or parts.password:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _parse_calls(body: Any) -> list[tuple[str, Any]]:
    if not isinstance(body, list) or len(body) > MAX_CALLS:
        raise ApiError(400, "invalid_body", f"expected a JSON array of at most {MAX_CALLS} calls")
    calls = []
    for item in body:
        if not isinstance(item, dict) or not isinstance(item.get("url"), str):
            raise ApiError(400, "invalid_body", 'each call is {"url": "...", "arguments": [...]}')
        if not is_loopback_url(item["url"]):
            raise ApiError(400, "url_not_allowed", "only http URLs on a loopback IP address may be called")
        calls.append((item["url"], item.get("arguments", [])))
    return calls


@blueprint.post("/test/tracecontext")
def relay() -> Response:
    # Every URL is checked before the first call: a request is refused whole, never half carried out.
    calls = _parse_calls(read_json_body())
    session: requests.Session = current_app.extensions["conformance_session"]
    results = []
    for url, arguments in calls:
        try:
            answer = session.post(url, json=arguments, timeout=CALL_TIMEOUT_S, allow_redirects=False)
            results.append({"url": url, "status": answer.status_code})
        except requests.RequestException as exc:
            results.append({"url": url, "error": type(exc).__name__})
    return jsonify(results=results)
