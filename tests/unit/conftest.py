"""Unit-test fixtures: spans captured in memory by the SDK, services' apps in-process."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import make_server

from services.telemetry.logs import install_record_patcher
from services.telemetry.setup import build_resource
from tests.conftest import free_port

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _tracer_provider() -> TracerProvider:
    # The global provider can be set once per process: one for the whole unit-test session, exporting
    # synchronously into memory so a test sees its spans as soon as they end.
    provider = TracerProvider(resource=build_resource("unit-test"))
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


@pytest.fixture
def broker(valkey_url: str) -> redis.Redis:
    """The gateway's jobs go to the test's real Redis-protocol server, into an empty queue."""
    from tests.unit.gateway_app import point_celery_at

    return point_celery_at(valkey_url)


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
