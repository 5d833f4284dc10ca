"""Capture the trace context as it travels: a real HTTP request (gateway -> users) and a real Celery
message (gateway -> Redis -> worker), taken from a running stack rather than typed by hand.

    .venv/bin/python -m tests.integration.context_capture

starts a private stack (free ports, a temporary directory) whose gateway calls users through a small
recording proxy, sends one `POST /api/users` with a caller's baggage, and prints what went over the wire;
then one chord (`POST /api/workflows/wordcount`), and the callback message the worker pushed.
docs/context-propagation.md shows its output. The Celery half is also a test (test_celery_shapes.py).
"""

from __future__ import annotations

import base64
import http.server
import json
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import requests

from tests.waiting import eventually
from tracehop.stack.config import free_port

# Shown as "(redacted)": the capture is for reading, not for copying a credential out of it.
SECRET_HEADERS = {"x-service-token"}


@contextmanager
def pushed_messages(redis_url: str, queue: str = "celery") -> Iterator[list[dict[str, Any]]]:
    """Collect every message LPUSHed to `queue` while the block runs, as Redis received it.

    Redis MONITOR streams each command the server executes, so the message is read exactly as the
    producer sent it, without stopping the worker that takes it from the list a moment later.
    """
    messages: list[dict[str, Any]] = []
    prefix = f"LPUSH {queue} "
    listening = threading.Event()
    stop = threading.Event()

    def watch() -> None:
        client = redis.Redis.from_url(redis_url)
        with client.monitor() as monitor:
            listening.set()
            # The worker polls its queue every second, so the stream wakes up often enough to see `stop`.
            for command in monitor.listen():
                if command["command"].startswith(prefix):
                    messages.append(json.loads(command["command"][len(prefix) :]))
                if stop.is_set():
                    return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    if not listening.wait(5):
        raise RuntimeError(f"MONITOR did not start on {redis_url}")
    try:
        yield messages
    finally:
        stop.set()
        watcher.join(5)


def wait_for(messages: list[dict[str, Any]], count: int, timeout: float = 5.0) -> None:
    eventually(lambda: len(messages) >= count, timeout, f"{count} message(s) pushed to the broker")


def decoded_body(message: dict[str, Any]) -> Any:
    """Celery's protocol 2 body, `[args, kwargs, embed]`, base64 inside the kombu envelope."""
    return json.loads(base64.b64decode(message["body"]))


class RecordingProxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `target` and keeps its request line and headers."""

    def __init__(self, target: str) -> None:
        self.target = target.rstrip("/")
        self.recorded: list[tuple[str, list[tuple[str, str]]]] = []
        super().__init__(("127.0.0.1", free_port()), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    server: RecordingProxy

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if not self.path.startswith("/healthz"):  # readiness probes are noise
            self.server.recorded.append(
                (f"{self.command} {self.path} {self.request_version}", self.headers.items())
            )
        headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
        upstream = requests.request(
            self.command, self.server.target + self.path, data=body, headers=headers, timeout=10
        )
        self.send_response(upstream.status_code)
        for name, value in upstream.headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(upstream.content)))
        self.end_headers()
        self.wfile.write(upstream.content)

    do_GET = do_POST = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _print_http(recorded: list[tuple[str, list[tuple[str, str]]]]) -> None:
    for request_line, headers in recorded:
        print(request_line)
        for name, value in headers:
            print(f"{name}: {'(redacted)' if name.lower() in SECRET_HEADERS else value}")
        print()


def main() -> None:
    from tracehop.stack.config import free_stack_ports
    from tracehop.stack.runner import LocalStack

    ports = free_stack_ports()
    proxy = RecordingProxy(f"http://127.0.0.1:{ports.users}")
    root = Path(tempfile.mkdtemp(prefix="tracehop-capture-"))
    env = {"TRACEHOP_USERS_URL": proxy.url, "OTEL_BSP_SCHEDULE_DELAY": "200"}
    stack = LocalStack(root / "var", root / "logs", ports, env, prometheus=False, beat=False)
    stack.start(timeout=120)
    try:
        with pushed_messages(stack.redis_url) as messages:
            response = requests.post(
                f"{stack.urls['gateway']}/api/users",
                json={"name": "Ada Lovelace", "email": "ada@example.org"},
                headers={"baggage": "tracehop.tenant=acme"},
                timeout=10,
            )
            wait_for(messages, 1)
        print(f"# POST /api/users -> {response.status_code}, trace id {response.json().get('trace_id')}\n")
        print("## HTTP: the gateway's request to users (requests instrumentation)\n")
        _print_http(proxy.recorded)
        print("## Celery: the message the gateway pushed to the Redis list `celery`\n")
        for message in messages:
            print(json.dumps({**message, "body": "<base64, decoded below>"}, indent=2))
            print("\nbody (decoded): " + json.dumps(decoded_body(message)))
        with pushed_messages(stack.redis_url) as messages:
            chord = requests.post(f"{stack.urls['gateway']}/api/workflows/wordcount", json={}, timeout=10)
            wait_for(messages, 4)
        print(
            f"\n# POST /api/workflows/wordcount -> {chord.status_code}, trace id {chord.json()['trace_id']}\n"
        )
        print("## Celery: the chord callback's message, pushed by the worker that ran the last header task\n")
        for message in messages:
            if message["headers"]["task"] == "sum_counts":
                shown = ("task", "id", "parent_id", "root_id", "traceparent", "tracehop_chord_links")
                print(json.dumps({name: message["headers"].get(name) for name in shown}, indent=2))
    finally:
        stack.stop()
        proxy.shutdown()


if __name__ == "__main__":
    main()
