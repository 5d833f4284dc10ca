"""Which instrumentation internals each setup runs: `stock` and TRACEHOP_LEAN_INSTRUMENTATION=false keep
OpenTelemetry's own; tracehop's setup (the default) installs the replacements."""

from __future__ import annotations

import opentelemetry.instrumentation.flask as otel_flask
import opentelemetry.instrumentation.redis as otel_redis
import opentelemetry.instrumentation.wsgi as otel_wsgi
import pytest
from opentelemetry.instrumentation.redis import util as otel_redis_util

from services.telemetry import flask_request_attributes, flask_request_url, redis_connection_attributes


def installed(app) -> tuple[bool, bool, bool]:
    return (
        otel_flask.otel_wsgi is not otel_wsgi,
        otel_redis._set_connection_attributes is not otel_redis_util._set_connection_attributes,
        app.request_class.__module__ == flask_request_url.__name__,
    )


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

    for name in ("TRACEHOP_LEAN_INSTRUMENTATION", "TRACEHOP_TRACING_SETUP"):
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    try:
        app = create_app({"TESTING": True, "REDIS_URL": valkey_url, "SERVICE_TOKEN": "t"})  # Flask and Redis
        assert installed(app) == expected
    finally:
        flask_request_attributes.uninstall()
        redis_connection_attributes.uninstall()
