"""Fixtures (a pytest plugin, registered in tests/conftest.py): a RabbitMQ broker private to this test run,
and a stack per broker (Redis, then RabbitMQ) for the Celery-shape tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest
from kombu import Connection

from tests.integration.stack import (
    SHAPES_ENV,
    RunningStack,
    start_private_stack,
    stop_in_background,
    wait_for_background_stops,
)
from tests.required_tools import skip_or_fail

AMQP_URL_VARIABLE = "TRACEHOP_AMQP_URL"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


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
        skip_or_fail(
            "amqp", f"no AMQP broker at {shown} ({problem}); set {AMQP_URL_VARIABLE} or start RabbitMQ"
        )
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


def env_for_broker(request: pytest.FixtureRequest, env: dict[str, str]) -> dict[str, str]:
    """`env` for the broker a fixture is parametrised with ("redis" or "amqp"): Redis as it is,
    RabbitMQ on a vhost (or queue) of the test's own."""
    env = dict(env)
    if request.param == "amqp":
        broker: AmqpBroker = request.getfixturevalue("amqp_broker")
        env.update(CELERY_BROKER_URL=broker.url, **broker.env)
    return env


@pytest.fixture(scope="module", params=["redis", "amqp"])
def broker_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    """A stack per broker (Redis, then RabbitMQ; the result backend is Redis for both), with a beat tick
    every second and fault injection allowed: one start per broker for all the tests of a module."""
    env = env_for_broker(request, SHAPES_ENV)
    running = start_private_stack(tmp_path_factory.mktemp(f"shapes-{request.param}"), env, beat=True)
    try:
        yield running
    finally:
        stop_in_background(running.stack)
