"""The worker's /metrics server waits for its port while a process of the killed main still holds it,
and a main process that cannot get it exits (supervisord restarts it) instead of running without it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from services.worker import job_metrics


def held_port() -> tuple[socket.socket, int]:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder, holder.getsockname()[1]


def test_waits_for_a_port_still_held_and_serves_once_it_is_free(monkeypatch: pytest.MonkeyPatch) -> None:
    def gave_up(code: int) -> None:
        raise AssertionError(f"gave up on the port (exit {code}) instead of waiting")

    monkeypatch.setattr(job_metrics.os, "_exit", gave_up)
    holder, port = held_port()
    released = threading.Timer(0.5, holder.close)
    released.start()
    started = time.monotonic()
    server = job_metrics._bind(port, "127.0.0.1", CollectorRegistry())
    try:
        assert time.monotonic() - started >= 0.4  # it did wait for the holder
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_never_freed_ends_the_process_with_an_error() -> None:
    holder, port = held_port()
    with holder:
        code = (
            "from prometheus_client import CollectorRegistry\n"
            "from services.worker import job_metrics\n"
            "job_metrics.BIND_WAIT_S = 0.3\n"
            f"job_metrics._bind({port}, '127.0.0.1', CollectorRegistry())\n"
            "print('went on without /metrics')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=os.getcwd()
        )
    assert done.returncode == os.EX_UNAVAILABLE, done
    assert "went on" not in done.stdout
    assert f"127.0.0.1:{port}" in done.stderr
