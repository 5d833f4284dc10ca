"""Fixtures (a pytest plugin, registered in tests/conftest.py): ONE embedded local stack per test session,
on free ports, in a temp dir; Prometheus in it; the programs of a module's private stack."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.integration.fault_tools import Programs
from tests.integration.stack import RunningStack, open_stack, wait_for_background_stops
from tests.required_tools import required, skip_or_fail
from tracehop.stack.config import free_stack_ports
from tracehop.stack.runner import LocalStack


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    root = tmp_path_factory.mktemp("stack")
    stack = LocalStack(
        var_dir=root / "var",
        log_dir=root / "logs",
        ports=free_stack_ports(),
        env_overrides={
            # Short export delay: tests wait for spans with a deadline, a shorter delay makes them quicker.
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "TRACEHOP_MAIL_LATENCY_MS": "1",
        },
        # With TRACEHOP_REQUIRE_PROMETHEUS=1 (CI installs it) a missing binary fails the start; without
        # it, the stack runs without Prometheus and the Prometheus checks skip, saying why.
        prometheus=True if required("prometheus") else None,
        prometheus_scrape_interval="1s",
    )
    stack.start(timeout=120)
    running = open_stack(stack)
    try:
        yield running
    finally:
        running.http.close()
        stack.stop()


@pytest.fixture(scope="session")
def prometheus_url(running_stack: RunningStack) -> str:
    if running_stack.prometheus is None:
        skip_or_fail(
            "prometheus",
            f"no `prometheus` binary on PATH ({shutil.which('prometheus')}): install Debian's prometheus",
        )
    return running_stack.prometheus


@pytest.fixture
def programs(stack: RunningStack) -> Iterator[Programs]:
    """Stop, start or kill the programs of the module's private `stack` fixture; after each test every
    program runs again, so one fault never leaks into the next test."""
    programs = Programs(stack.stack)
    yield programs
    programs.ensure_all_running()


@pytest.fixture(scope="session", autouse=True)
def _join_background_stops() -> Iterator[None]:
    yield
    wait_for_background_stops()
