"""A running local stack as the integration tests use it, and the private stacks some modules start.

Real processes under supervisor (gunicorn gateway and users, a prefork Celery worker, valkey-server, the
trace store, Prometheus when installed), real OTLP export, real HTTP between them. Nothing here touches a
stack a person started with `make up`: other ports, other directories. The fixtures that hand these out
are in stack_fixtures.py and amqp_fixtures.py.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.waiting import eventually
from tracehop.stack.config import free_stack_ports
from tracehop.stack.runner import LocalStack
from tracehop.traces.query import Span, TraceQuery, spans_from_otlp_json
from tracehop.traces.store.api import resource_spans_json
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.tree import Node, assert_trace_tree
from tracehop.traffic import wait_for_job

TRACE_TIMEOUT_S = 30.0

# A one-process stack whose lost jobs come back through the job ledger within seconds: a short start
# deadline and reconciler interval, and a visibility timeout long enough that kombu's sweep cannot be
# what brought a job back.
FAST_LEDGER_ENV = {
    "GUNICORN_WORKERS": "1",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_WORKER_CONCURRENCY": "1",
    "TRACEHOP_VISIBILITY_TIMEOUT_S": "3600",
    "TRACEHOP_JOB_START_DEADLINE_S": "3",
    "TRACEHOP_RECONCILE_INTERVAL_S": "0.5",
}

# A span of each of these (service, kind): the whole trace of POST /api/users has arrived.
WHOLE_TRACE = (("gateway", "SERVER"), ("users", "SERVER"), ("worker", "CONSUMER"))


def has_spans(*wanted: tuple[str, str]) -> Callable[[list[Span]], bool]:
    """A wait condition: the trace holds a span of each (service, kind); they arrive in separate batches,
    from several processes."""
    return lambda spans: set(wanted) <= {(s.service, s.kind) for s in spans}


@dataclass
class RunningStack:
    stack: LocalStack
    log_dir: Path
    http: requests.Session
    traces: TraceQuery

    @property
    def gateway(self) -> str:
        return self.stack.urls["gateway"]

    @property
    def prometheus(self) -> str | None:
        return self.stack.urls.get("prometheus")

    def post_user(
        self, email: str | None = None, *, name: str = "Ada", domain: str = "example.org", **kwargs: Any
    ) -> requests.Response:
        """POST /api/users: the request every trace of the design starts with. Without `email`, a new
        address at `domain` (so users never answers 409 for a repeated test)."""
        email = email or f"user-{uuid.uuid4().hex[:8]}@{domain}"
        kwargs.setdefault("timeout", 15)
        return self.http.post(f"{self.gateway}/api/users", json={"name": name, "email": email}, **kwargs)

    def wait_for_spans(self, trace_id: str, count: int, timeout: float = TRACE_TIMEOUT_S) -> list[Span]:
        """The trace once it holds at least `count` spans: spans arrive in batches, from three processes."""
        return self.traces.wait_for_trace(trace_id, until=lambda spans: len(spans) >= count, timeout=timeout)

    def assert_tree(self, trace_id: str, expected: str, timeout: float = TRACE_TIMEOUT_S) -> list[Node]:
        """Poll the trace until it has exactly the `expected` tree (spans arrive late, in batches, from
        three processes); past the deadline, fail with the expected and actual trees side by side."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.traces.get_trace(trace_id) or []
            try:
                return assert_trace_tree(spans, expected)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def wait_for_job(self, job_id: str, timeout: float = 30.0) -> dict:
        return wait_for_job(self.http, self.gateway, job_id, timeout)

    def log_lines(self, service: str) -> list[dict]:
        path = self.log_dir / f"{service}.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for_log_lines(
        self, service: str, predicate: Callable[[dict], bool], timeout: float = 15.0
    ) -> list[dict]:
        return eventually(
            lambda: [line for line in self.log_lines(service) if predicate(line)],
            timeout,
            f"a matching line in {service}.log",
        )


def open_stack(stack: LocalStack) -> RunningStack:
    """The started `stack`, with a session that never goes through a proxy from the environment."""
    http = requests.Session()
    http.trust_env = False
    return RunningStack(stack, stack.layout.log_dir, http, TraceQuery(stack.urls["query"]))


# -------------------------------------------------------------------------- private stacks (issue 6)
# The Celery-shape tests run the same assertions with Redis and with RabbitMQ as the broker, and each
# "broken on purpose" test starts a stack of its own with one switch on. These stacks skip Prometheus
# (nothing here scrapes) and, unless asked, celery beat: two cores are shared by everything.

# For the tests: a beat tick every second, faults allowed, quick exports, one gunicorn worker each.
SHAPES_ENV = {
    "GUNICORN_WORKERS": "1",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_BEAT_INTERVAL_S": "1",
    "TRACEHOP_FAULT_INJECTION": "1",
}


@contextmanager
def private_stack(root: Path, env: dict[str, str], *, beat: bool = False) -> Iterator[RunningStack]:
    """A private stack for the duration of a `with` block (a module's fixture, typically)."""
    running = start_private_stack(root, env, beat=beat)
    try:
        yield running
    finally:
        running.http.close()  # idle keep-alive connections would slow gunicorn's graceful stop
        running.stack.stop()


def start_private_stack(root: Path, env: dict[str, str], *, beat: bool = False) -> RunningStack:
    """A stack of its own under `root`, on free ports, started and ready; the caller stops it."""
    stack = LocalStack(root / "var", root / "logs", free_stack_ports(), env, prometheus=False, beat=beat)
    stack.start(timeout=120)
    return open_stack(stack)


_background_stops: list[tuple[LocalStack, threading.Thread, list[BaseException]]] = []


def stop_in_background(stack: LocalStack) -> None:
    """Stop a private stack without waiting: its programs take seconds to exit (graceful shutdowns,
    span flushes) that the next test need not spend idle. Joined, and errors raised, at session end."""
    errors: list[BaseException] = []

    def stop() -> None:
        try:
            stack.stop()
        except BaseException as error:  # re-raised by wait_for_background_stops
            errors.append(error)

    thread = threading.Thread(target=stop, name=f"stop {stack.layout.var_dir}", daemon=True)
    thread.start()
    _background_stops.append((stack, thread, errors))


def wait_for_background_stops() -> None:
    while _background_stops:
        stack, thread, errors = _background_stops.pop(0)
        thread.join(timeout=120)
        if thread.is_alive() or errors:
            raise RuntimeError(
                f"stopping the stack in {stack.layout.var_dir} failed: {errors or 'timed out'}"
            )


def stored_spans(stack: LocalStack, trace_id: str) -> list[Span]:
    """The spans of a trace as a STOPPED stack's trace store kept them (read from its SQLite file).

    For tests that must stop the stack to see what each process flushed on its way out: the trace store
    stops last, so it receives everything the services flush while stopping.
    """
    database = SpanDatabase(stack.layout.traces_db)
    try:
        stored = database.trace(trace_id)
        return spans_from_otlp_json({"resourceSpans": resource_spans_json(database, stored)})
    finally:
        database.close()
