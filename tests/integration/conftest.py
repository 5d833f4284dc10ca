"""Integration fixtures: ONE embedded local stack per test session, on free ports, in a temp dir.

Real processes under supervisor (gunicorn gateway and users, a prefork Celery worker, valkey-server, the
trace store, Prometheus when installed), real OTLP export, real HTTP between them. Nothing here touches a
stack a person started with `make up`: other ports, other directories.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import free_port
from tracehop.stack import LocalStack
from tracehop.trace_query import Span, TraceQuery
from tracehop.trace_tree import Node, assert_trace_tree

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
        name: free_port() for name in ("gateway", "users", "worker_metrics", "otlp", "query", "prometheus", "redis")
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
        pytest.skip(f"no `prometheus` binary on PATH ({shutil.which('prometheus')}): install Debian's prometheus")
    return running_stack.prometheus
