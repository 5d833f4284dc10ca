"""Which instrumentation internals each setup runs: `stock` and TRACEHOP_LEAN_INSTRUMENTATION=false keep
OpenTelemetry's own; tracehop's setup (the default) installs the replacements."""

from __future__ import annotations

import urllib.parse

import opentelemetry.instrumentation.flask as otel_flask
import opentelemetry.instrumentation.redis as otel_redis
import opentelemetry.instrumentation.requests as otel_requests
import opentelemetry.instrumentation.wsgi as otel_wsgi
import pytest
from opentelemetry.instrumentation.redis import util as otel_redis_util
from opentelemetry.instrumentation.requests import RequestsInstrumentor

from services.telemetry import (
    flask_request_attributes,
    flask_request_url,
    redis_connection_attributes,
    requests_client_attributes,
)
from services.telemetry.setup import instrument_requests


def installed(app) -> tuple[bool, bool, bool]:
    return (
        otel_flask.otel_wsgi is not otel_wsgi,
        otel_redis._set_connection_attributes is not otel_redis_util._set_connection_attributes,
        app.request_class.__module__ == flask_request_url.__name__,
    )


def _tracing_setup(monkeypatch: pytest.MonkeyPatch, variables: dict[str, str]) -> None:
    """Exactly `variables` of the two that choose the setup, whatever the test's environment says."""
    for name in ("TRACEHOP_LEAN_INSTRUMENTATION", "TRACEHOP_TRACING_SETUP"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, (True, True, True)),
        ({"TRACEHOP_LEAN_INSTRUMENTATION": "false"}, (False, False, False)),
        ({"TRACEHOP_TRACING_SETUP": "stock"}, (False, False, False)),
        ({"TRACEHOP_TRACING_SETUP": "stock", "TRACEHOP_LEAN_INSTRUMENTATION": "true"}, (False, False, False)),
    ],
)
def test_each_setup_runs_its_instrumentation_internals(
    variables: dict[str, str],
    expected: tuple[bool, bool, bool],
    valkey_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.users import create_app

    _tracing_setup(monkeypatch, variables)
    try:
        app = create_app({"TESTING": True, "REDIS_URL": valkey_url, "SERVICE_TOKEN": "t"})  # Flask and Redis
        assert installed(app) == expected
    finally:
        flask_request_attributes.uninstall()
        redis_connection_attributes.uninstall()


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({}, True),
        ({"TRACEHOP_LEAN_INSTRUMENTATION": "false"}, False),
        ({"TRACEHOP_TRACING_SETUP": "stock"}, False),
    ],
)
def test_each_setup_runs_its_requests_instrumentation_internals(
    variables: dict[str, str], expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tracing_setup(monkeypatch, variables)
    try:
        instrument_requests()
        assert (otel_requests.urlparse is not urllib.parse.urlparse) == expected
        assert RequestsInstrumentor().is_instrumented_by_opentelemetry
    finally:
        requests_client_attributes.uninstall()
