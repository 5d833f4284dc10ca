"""Unit-test fixtures: spans captured in memory by the SDK, services' apps in-process."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import make_server

from services.telemetry.lean_tracer import LeanTracerProvider
from services.telemetry.logs import install_record_patcher
from services.telemetry.setup import build_resource
from tracehop.stack.config import free_port

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _tracer_provider() -> TracerProvider:
    # The global provider can be set once per process: one for the whole unit-test session, exporting
    # synchronously into memory so a test sees its spans as soon as they end.
    # The provider tracehop's setup installs in the services (the SDK's, with lean_tracer.py's hot paths).
    provider = LeanTracerProvider(resource=build_resource("unit-test"))
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(provider)
    # What configure_logging() does in the services (without its sinks): log calls inside a span become
    # events on it, so unit tests see the same events the trace backend shows.
    install_record_patcher(span_events=True)
    return provider


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture(scope="session")
def gateway_config(users_server: str, valkey_url: str) -> dict[str, Any]:
    """The gateway's configuration in unit tests: users served over HTTP in a thread, the test's Redis."""
    return {
        "TESTING": True,
        "USERS_URL": users_server,
        "SERVICE_TOKEN": "test-token",
        "REDIS_URL": valkey_url,
    }


@pytest.fixture(scope="session")
def make_gateway(gateway_config: dict[str, Any]) -> Callable[..., Flask]:
    """`make_gateway(KEY=value, ...)`: a gateway app with these config keys on top of `gateway_config`.

    The gateway's jobs go to the test's Redis too (Celery's app is one per process, like in the service).
    """
    from services.gateway import create_app
    from services.worker.celery_app import app as celery_app

    celery_app.conf.broker_url = gateway_config["REDIS_URL"]
    celery_app.conf.result_backend = gateway_config["REDIS_URL"]

    def make(**config: Any) -> Flask:
        return create_app({**gateway_config, **config})

    return make


@pytest.fixture
def broker(make_gateway: Callable[..., Flask], valkey_url: str) -> redis.Redis:
    """The Redis the gateway queues its jobs in, with an empty queue."""
    client = redis.Redis.from_url(valkey_url)
    client.delete("celery")
    return client


@pytest.fixture
def app(make_gateway: Callable[..., Flask], broker: redis.Redis) -> Flask:
    return make_gateway()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def queued_messages(broker: redis.Redis) -> list[dict[str, Any]]:
    """Every message waiting in Celery's default queue, oldest first, its body decoded:
    {"headers": {...}, "args": [...], "kwargs": {...}, "embed": {...}}."""
    messages = [json.loads(raw) for raw in reversed(broker.lrange("celery", 0, -1))]
    decoded = []
    for message in messages:
        args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
        decoded.append({"headers": message["headers"], "args": args, "kwargs": kwargs, "embed": embed})
    return decoded


@pytest.fixture(scope="session")
def users_app(valkey_url: str):
    from services.users import create_app

    return create_app({"TESTING": True, "REDIS_URL": valkey_url, "SERVICE_TOKEN": "test-token"})


@pytest.fixture
def users_client(users_app):
    return users_app.test_client()


@pytest.fixture(scope="session")
def users_server(users_app) -> Iterator[str]:
    """The users app served over real HTTP in a thread, for the gateway to call."""
    port = free_port()
    server = make_server("127.0.0.1", port, users_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the worker sets up in each process, for jobs run eagerly here: job metrics, then the Celery
    and requests instrumentation (CONSUMER spans, CLIENT spans of calls to users). No mail latency."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    from services.telemetry.setup import instrument
    from services.worker import job_metrics

    monkeypatch.setenv("TRACEHOP_MAIL_LATENCY_MS", "0")
    job_metrics.connect_signals()
    instrument([CeleryInstrumentor(), RequestsInstrumentor()])


def jobs_total(task: str, state: str) -> float:
    """tracehop_jobs_total{task, state} as counted in this process."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("tracehop_jobs_total", {"task": task, "state": state}) or 0.0


def as_query_spans(finished, service: str):
    """In-memory SDK spans as the query client's Span objects, so unit tests can assert trees in the
    same text form as integration tests. All spans of a unit test come from one process: one service."""
    from opentelemetry.trace import format_span_id, format_trace_id

    from tracehop.traces.query import Span

    return [
        Span(
            trace_id=format_trace_id(s.context.trace_id),
            span_id=format_span_id(s.context.span_id),
            parent_span_id=format_span_id(s.parent.span_id) if s.parent else "",
            name=s.name,
            kind=s.kind.name,
            service=service,
            start_ns=s.start_time,
            end_ns=s.end_time,
            status_code=s.status.status_code.name,
            status_message=s.status.description or "",
            attributes=dict(s.attributes or {}),
            events=[(e.name, dict(e.attributes or {}), e.timestamp) for e in s.events],
        )
        for s in finished
    ]


@pytest.fixture
def http() -> requests.Session:
    """A requests session that ignores proxy variables: tests talk to 127.0.0.1 only."""
    session = requests.Session()
    session.trust_env = False
    return session
