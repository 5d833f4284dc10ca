"""What the fault tests need to break a private stack and to watch it recover.

- `Programs`: stop, start (or both at once) or SIGKILL one supervised program (supervisord's XML-RPC API);
- `BlackHole`: a listener that accepts connections and never answers (a hung trace backend);
- `metric_value`: one sample from a /metrics page;
- `timed`: a request and how long it took;
- `publish_job`: queue a task straight onto a stack's broker, with a trace context we chose.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from tracehop.stack.runner import LocalStack
from tracehop.stack.supervisor_client import ProcessInfo, SupervisorClient


class Programs:
    """Control over the programs of one running LocalStack."""

    def __init__(self, stack: LocalStack) -> None:
        # Stopping the worker waits for its running job: longer than the client's default 5 s.
        self.client = SupervisorClient(stack.layout.supervisor_socket, timeout=60)

    def info(self, name: str) -> ProcessInfo:
        info = self.client.process(name)
        assert info is not None, f"supervisord runs no program {name!r}"
        return info

    def pid(self, name: str) -> int:
        return self.info(name).pid

    def stop(self, name: str) -> None:
        self.client.stop_program(name)

    def start(self, name: str) -> None:
        self.client.start_program(name)

    def start_and_stop_at_once(self, name: str) -> None:
        """Start the program and ask to stop it in one request, with supervisord held to one CPU meanwhile:
        supervisord forks the program's process and sends the stop before that process runs (the parent
        goes on after a fork; the child waits for the CPU), so the stop finds it before its exec."""
        supervisord = self.client.pid()
        cpus = os.sched_getaffinity(supervisord)
        os.sched_setaffinity(supervisord, {min(cpus)})
        try:
            self.client._call(
                "system.multicall",
                [
                    {"methodName": "supervisor.startProcess", "params": [name, False]},
                    {"methodName": "supervisor.stopProcess", "params": [name, False]},
                ],
            )
        finally:
            os.sched_setaffinity(supervisord, cpus)

    def kill_group(self, name: str) -> int:
        """SIGKILL the program and all its children (supervisord makes each program a group leader);
        supervisord then restarts it, as it would after any crash. Returns the killed pid."""
        pid = self.pid(name)
        os.killpg(pid, signal.SIGKILL)
        return pid

    def wait_running(self, name: str, other_than: int = 0, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while True:
            info = self.info(name)
            if info.state == "RUNNING" and info.pid != other_than:
                return info.pid
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} is {info.state}, not running again after {timeout:.0f}s")
            time.sleep(0.2)

    def ensure_all_running(self) -> None:
        """Start whatever a failed test left stopped, so the next test starts from a whole stack."""
        for info in self.client.processes():
            if info.state in ("STOPPED", "EXITED", "FATAL"):
                self.client.start_program(info.name)

    @contextmanager
    def stopped(self, name: str) -> Iterator[None]:
        self.stop(name)
        try:
            yield
        finally:
            self.start(name)


class BlackHole:
    """Listens on 127.0.0.1:`port`, accepts every connection, reads and never answers: what a hung
    backend looks like to a client, which then waits for its own timeout."""

    def __init__(self, port: int) -> None:
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(64)
        self._server.settimeout(0.2)
        self._held: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(connection)

    def __enter__(self) -> BlackHole:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        self._thread.join(timeout=5)
        for connection in [*self._held, self._server]:
            connection.close()

    @property
    def connections(self) -> int:
        return len(self._held)


def metric_value(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when there are none)."""
    text = requests.get(url, timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


def timed(call: Callable[[], requests.Response]) -> tuple[requests.Response, float]:
    started = time.perf_counter()
    response = call()
    return response, time.perf_counter() - started


def publish_job(broker_url: str, task: str, args: list[Any], traceparent: str) -> str:
    """Queue `task` without the gateway, carrying `traceparent` the way the Celery instrumentation does
    (a message header), so its spans land in a trace whose id the test knows. Returns the job id."""
    app = Celery(broker=broker_url)
    try:
        return app.send_task(task, args=args, headers={"traceparent": traceparent}).id
    finally:
        app.close()
