"""The public door's limits (services/web/door_limits.py), each hit on purpose against a real gateway.

The gateway runs alone here (gunicorn with services/web/gunicorn_public_conf.py, one process) with small
limits so that each is reached within a second: a header timeout and a body timeout of 1 s and at most
4 connections. Nothing behind it is needed: the requests that reach the application are `/healthz`,
`/metrics` and a POST the application refuses before it calls anyone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.fault_tools import metric_value
from tracehop.stack.config import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
LIMIT_S = 1.0
MAX_CONNECTIONS = 4


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("door")
    (root / "prom").mkdir()
    port = free_port()
    env = {
        **os.environ,
        "GUNICORN_WORKERS": "1",
        "TRACEHOP_HEADER_TIMEOUT_S": str(LIMIT_S),
        "TRACEHOP_BODY_TIMEOUT_S": str(LIMIT_S),
        "TRACEHOP_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
        "TRACEHOP_LOG_DIR": str(root / "logs"),
        "PROMETHEUS_MULTIPROC_DIR": str(root / "prom"),
        # Nothing listens there: spans are dropped, which costs the requests nothing.
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    command = [
        *(sys.executable, "-m", "gunicorn", "-c", "services/web/gunicorn_public_conf.py"),
        *("-b", f"127.0.0.1:{port}", "--env", "OTEL_SERVICE_NAME=gateway", "services.gateway:create_app()"),
    ]
    output = (root / "gunicorn.out").open("wb")
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the gateway did not start: {(root / 'gunicorn.out').read_text()[-2000:]}")
        time.sleep(0.2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        output.close()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_answer(sock: socket.socket) -> tuple[float, bytes]:
    """Everything the server sends until it closes, and how long that took."""
    started = time.monotonic()
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return time.monotonic() - started, data


def parse(answer: bytes) -> tuple[int, dict[str, str], dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {
        name.lower(): value.strip() for name, _, value in (line.partition(":") for line in header_lines)
    }
    return int(status_line.split()[1]), headers, json.loads(body)


def refused(url: str, reason: str) -> float:
    return metric_value(f"{url}/metrics", "tracehop_door_connections_refused_total", {"reason": reason})


def test_headers_that_do_not_arrive_in_time_get_a_408_json_error(gateway: str) -> None:
    before = refused(gateway, "header_timeout")
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        elapsed, answer = read_answer(sock)
    status, headers, body = parse(answer)
    assert status == 408
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/json"
    assert body == {
        "error": "request_timeout",
        "message": "the request's headers did not arrive within 1 s",
        "trace_id": None,
    }
    assert LIMIT_S - 0.1 < elapsed < LIMIT_S + 2
    assert refused(gateway, "header_timeout") == before + 1


def test_a_new_connections_header_deadline_counts_from_when_it_opened(gateway: str) -> None:
    # Silence first, then a partial request: the deadline is 1 s after connecting, not 1 s after the first
    # byte (that would let a client hold a connection for twice the limit).
    with connect(gateway) as sock:
        opened = time.monotonic()
        time.sleep(0.9)
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        _, answer = read_answer(sock)
        elapsed = time.monotonic() - opened
    assert parse(answer)[0] == 408
    assert elapsed < LIMIT_S + 0.6, f"answered {elapsed:.2f}s after connecting"


def test_trickled_headers_still_hit_the_header_deadline(gateway: str) -> None:
    # One header line every 0.3 s: each line arrives in time, the headers as a whole do not.
    with connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        try:
            for line in range(20):
                time.sleep(0.3)
                sock.sendall(f"X-Slow-{line}: {line}\r\n".encode())
        except OSError:
            pass  # closed by the server: what this test wants
        _, answer = read_answer(sock)
        elapsed = time.monotonic() - started
    assert parse(answer)[0] == 408
    assert elapsed < LIMIT_S + 2


def test_a_body_that_does_not_arrive_in_time_gets_a_408_json_error(gateway: str) -> None:
    before = refused(gateway, "body_timeout")
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 40\r\n\r\n{"
        )
        elapsed, answer = read_answer(sock)
    status, _, body = parse(answer)
    assert status == 408
    assert body["error"] == "request_timeout"
    assert body["message"] == "the request's body did not arrive within 1 s"
    assert LIMIT_S - 0.1 < elapsed < LIMIT_S + 2
    assert refused(gateway, "body_timeout") == before + 1


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(gateway: str) -> None:
    with connect(gateway) as sock:
        elapsed, answer = read_answer(sock)
    assert answer == b""
    assert LIMIT_S - 0.1 < elapsed < LIMIT_S + 2


def test_a_body_sent_after_100_continue_reaches_the_application(gateway: str) -> None:
    # The door reads the body before the application runs: it must say "100 Continue" itself.
    body = json.dumps({"name": "", "email": "a@example.org"}).encode()
    with connect(gateway) as sock:
        sock.sendall(
            b"POST /api/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + b"Expect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        _, answer = read_answer(sock)
    status, _, answered = parse(answer)
    assert status == 400  # the application's own answer to an empty name, with its trace id
    assert answered["error"] == "invalid_name" and len(answered["trace_id"]) == 32


def test_an_oversized_body_is_the_applications_413(gateway: str) -> None:
    response = requests.post(
        f"{gateway}/api/users",
        data=b"{" + b" " * 100_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_entity_too_large"


def test_an_oversized_chunked_body_is_the_applications_413_too(gateway: str) -> None:
    # No Content-Length: the door reads 64 KiB ahead, the application reads on past it and refuses.
    chunks = (b"{" + b" " * 9_999 for _ in range(10))
    response = requests.post(
        f"{gateway}/api/users", data=chunks, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.request.headers["Transfer-Encoding"] == "chunked"
    assert response.status_code == 413
    assert response.json()["error"] == "request_entity_too_large"


def test_connections_over_the_limit_get_a_503_json_error_and_the_door_recovers(gateway: str) -> None:
    before = refused(gateway, "over_capacity")
    held = [connect(gateway) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        time.sleep(0.2)  # accepted by the worker
        response = requests.get(f"{gateway}/healthz", timeout=5)
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert response.json() == {
            "error": "over_capacity",
            "message": "the gateway has too many open connections; retry shortly",
            "trace_id": None,
        }
    finally:
        for sock in held:
            sock.close()
    # The held connections are let go at once when their clients leave: the door serves again.
    deadline = time.monotonic() + 5
    while (status := requests.get(f"{gateway}/healthz", timeout=5).status_code) != 200:
        assert time.monotonic() < deadline, f"still {status}"
        time.sleep(0.1)
    assert refused(gateway, "over_capacity") >= before + 1
