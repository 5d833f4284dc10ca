"""Integration fixtures: ONE embedded local stack per test session, on free ports, in a temp dir.

Real processes under supervisor (gunicorn gateway and users, a prefork Celery worker, valkey-server, the
trace store, Prometheus when installed), real OTLP export, real HTTP between them. Nothing here touches a
stack a person started with `make up`: other ports, other directories.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from kombu import Connection

from tests.conftest import free_port
from tests.integration.fault_tools import Programs
from tracehop.stack.runner import LocalStack
from tracehop.traces.query import Span, TraceQuery, spans_from_otlp_json
from tracehop.traces.store.api import resource_spans_json
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.tree import Node, assert_trace_tree

TRACE_TIMEOUT_S = 30.0


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
        deadline = time.monotonic() + timeout
        while True:
            body = self.http.get(f"{self.gateway}/api/jobs/{job_id}", timeout=5).json()
            if body["state"] in ("SUCCESS", "FAILURE") or time.monotonic() > deadline:
                return body
            time.sleep(0.1)

    def log_lines(self, service: str) -> list[dict]:
        path = self.log_dir / f"{service}.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def wait_for_log_lines(
        self, service: str, predicate: Callable[[dict], bool], timeout: float = 15.0
    ) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.log_lines(service) if predicate(line)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


def _prometheus_wanted() -> bool | None:
    # CI installs Prometheus and sets TRACEHOP_REQUIRE_PROMETHEUS=1, so a missing binary fails there
    # instead of silently skipping the Prometheus checks; on a laptop without it they skip, saying why.
    if os.environ.get("TRACEHOP_REQUIRE_PROMETHEUS") == "1":
        return True
    return None


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("stack")
    ports = {
        name: free_port()
        for name in ("gateway", "users", "worker_metrics", "otlp", "query", "prometheus", "redis")
    }
    stack = LocalStack(
        var_dir=root / "var",
        log_dir=root / "logs",
        ports=ports,
        env_overrides={
            # Short export delay: tests wait for spans with a deadline, a shorter delay makes them quicker.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "TRACEHOP_MAIL_LATENCY_MS": "1",
        },
        prometheus=_prometheus_wanted(),
        prometheus_scrape_interval="1s",
    )
    stack.start(timeout=120)
    http = requests.Session()
    http.trust_env = False
    try:
        yield RunningStack(stack, root / "logs", http, TraceQuery(stack.urls["query"]))
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def prometheus_url(running_stack: RunningStack) -> str:
    if running_stack.prometheus is None:
        pytest.skip(
            f"no `prometheus` binary on PATH ({shutil.which('prometheus')}): install Debian's prometheus"
        )
    return running_stack.prometheus


# -------------------------------------------------------------------------- private stacks (issue 6)
# The Celery-shape tests run the same assertions with Redis and with RabbitMQ as the broker, and each
# "broken on purpose" test starts a stack of its own with one switch on. These stacks skip Prometheus
# (nothing here scrapes) and, unless asked, celery beat: two cores are shared by everything.

AMQP_URL_VARIABLE = "TRACEHOP_AMQP_URL"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
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


@pytest.fixture
def programs(stack: RunningStack) -> Iterator[Programs]:
    """Stop, start or kill the programs of the module's private `stack` fixture; after each test every
    program runs again, so one fault never leaks into the next test."""
    programs = Programs(stack.stack)
    yield programs
    programs.ensure_all_running()


def start_private_stack(root: Path, env: dict[str, str], *, beat: bool = False) -> RunningStack:
    """A stack of its own under `root`, on free ports, started and ready; the caller stops it."""
    ports = {name: free_port() for name in ("gateway", "users", "worker_metrics", "otlp", "query", "redis")}
    stack = LocalStack(root / "var", root / "logs", ports, env, prometheus=False, beat=beat)
    stack.start(timeout=120)
    http = requests.Session()
    http.trust_env = False
    return RunningStack(stack, root / "logs", http, TraceQuery(stack.urls["query"]))


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


@pytest.fixture(scope="session", autouse=True)
def _join_background_stops() -> Iterator[None]:
    yield
    wait_for_background_stops()


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


@dataclass(frozen=True)
class AmqpBroker:
    """A RabbitMQ broker private to this test run: its own vhost, or (without rabbitmqctl) its own queue."""

    url: str
    env: dict[str, str]


def _amqp_problem(url: str) -> str | None:
    """None when an AMQP broker accepts a connection (and our credentials) at `url`, else why not."""
    try:
        with Connection(url, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as error:  # kombu raises many kinds (socket, auth, protocol): any means "not usable"
        return f"{type(error).__name__}: {error}"
    return None


def _rabbitmqctl(*args: str) -> bool:
    if shutil.which("rabbitmqctl") is None:
        return False
    result = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=30)
    return result.returncode == 0


@pytest.fixture(scope="session")
def amqp_broker() -> Iterator[AmqpBroker]:
    """Skips (saying why) when no AMQP broker answers; fails instead with TRACEHOP_REQUIRE_AMQP=1 (CI)."""
    url = os.environ.get(AMQP_URL_VARIABLE) or DEFAULT_AMQP_URL
    problem = _amqp_problem(url)
    if problem is not None:
        shown = url.replace(f":{urlsplit(url).password}@", ":***@") if urlsplit(url).password else url
        message = f"no AMQP broker at {shown} ({problem}); set {AMQP_URL_VARIABLE} or start RabbitMQ"
        if os.environ.get("TRACEHOP_REQUIRE_AMQP") == "1":
            pytest.fail(message + " [TRACEHOP_REQUIRE_AMQP=1]")
        pytest.skip(message)
    # Parallel runs (and a stack someone runs by hand) must not consume each other's jobs.
    private = f"tracehop-test-{uuid.uuid4().hex[:12]}"
    parts = urlsplit(url)
    user = parts.username or "guest"
    permissions = ("set_permissions", "-p", private, user, ".*", ".*", ".*")
    if _rabbitmqctl("add_vhost", private) and _rabbitmqctl(*permissions):
        yield AmqpBroker(urlunsplit(parts._replace(path=f"/{private}")), {})
        wait_for_background_stops()  # a worker still stopping would reconnect and log errors
        _rabbitmqctl("delete_vhost", private)
        return
    # No rabbitmqctl (a remote or containerised broker): the shared vhost, a queue of our own.
    yield AmqpBroker(url, {"TRACEHOP_CELERY_QUEUE": private})
    wait_for_background_stops()  # a worker still stopping would declare the queue again
    with Connection(url, connect_timeout=2) as connection:
        connection.default_channel.queue_delete(private)


@pytest.fixture(scope="module", params=["redis", "amqp"])
def broker_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """A stack per broker (Redis, then RabbitMQ; the result backend is Redis for both), with a beat tick
    every second and fault injection allowed: one start per broker for all the tests of a module."""
    env = dict(SHAPES_ENV)
    if request.param == "amqp":
        broker: AmqpBroker = request.getfixturevalue("amqp_broker")
        env.update(CELERY_BROKER_URL=broker.url, **broker.env)
    running = start_private_stack(tmp_path_factory.mktemp(f"shapes-{request.param}"), env, beat=True)
    try:
        yield running
    finally:
        stop_in_background(running.stack)
