"""What `up` and `down` rely on at run time: readiness probes and finding a program's leftover processes."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from rich.console import Console

from tracehop.stack.config import free_port
from tracehop.stack.processes import group_members, process_exists
from tracehop.stack.readiness import ReadinessProbe
from tracehop.stack.runner import ComponentStatus
from tracehop.stack.view import components_table


class ReadyzHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = (
            (200, {"status": "ok"}) if self.path == "/healthz" else (503, {"message": "unreachable: redis"})
        )
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ReadyzHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_probe_passes_on_200_and_names_the_missing_dependency_on_503(http_service: str) -> None:
    assert ReadinessProbe("users", f"{http_service}/healthz").check() is None
    assert ReadinessProbe("gateway", f"{http_service}/readyz").check() == "HTTP 503 unreachable: redis"


def test_probes_of_nothing_listening_say_connection_refused() -> None:
    port = free_port()

    assert ReadinessProbe("gateway", f"http://127.0.0.1:{port}/readyz").check() == "connection refused"
    assert ReadinessProbe("redis", f"redis://127.0.0.1:{port}/0").check() == "connection refused"


def test_redis_probe_needs_a_pong() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer(reply: bytes) -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(64)
                connection.sendall(reply)

        for reply, expected in ((b"+PONG\r\n", None), (b"HTTP/1.1 400\r\n", "unexpected reply")):
            thread = threading.Thread(target=answer, args=(reply,))
            thread.start()
            result = ReadinessProbe("redis", f"redis://127.0.0.1:{listener.getsockname()[1]}/0").check()
            thread.join(timeout=5)
            assert (result is None) if expected is None else result.startswith(expected), result


def test_a_process_group_is_found_with_its_children_until_it_is_gone() -> None:
    # Like a program under supervisord: leader of its own group, with a child (a forked worker).
    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen(['sleep', '30']); time.sleep(30)",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while len(group_members(leader.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        members = group_members(leader.pid)
        assert leader.pid in members and len(members) == 2
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait(timeout=10)

    deadline = time.monotonic() + 10
    while group_members(leader.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(leader.pid) == []
    assert not process_exists(leader.pid)


@pytest.mark.parametrize(
    ("state", "problem", "summary", "ready"),
    [
        ("RUNNING", None, "ready", True),
        # Answering before supervisord's startsecs have passed: not yet ready, and the table says why.
        ("STARTING", None, "starting", False),
        ("STARTING", "connection refused", "starting (connection refused)", False),
        ("RUNNING", "HTTP 503 unreachable: redis", "not ready (HTTP 503 unreachable: redis)", False),
        ("BACKOFF", "connection refused", "backoff (connection refused)", False),
        ("FATAL", None, "fatal", False),
    ],
)
def test_a_component_has_one_state(state: str, problem: str | None, summary: str, ready: bool) -> None:
    status = ComponentStatus("gateway", state, 42, "http://127.0.0.1:8080", problem)

    assert (status.summary, status.ready) == (summary, ready)
    console = Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None, record=True)
    console.print(components_table([status]))
    (row,) = [line for line in console.export_text().splitlines() if "gateway" in line]
    assert (
        row.split("│")[2].strip() == summary
    )  # one state column, no separate "ready" yes/no to contradict it
