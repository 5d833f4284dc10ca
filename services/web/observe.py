"""What every tracehop Flask service installs, in order: JSON errors, metrics, tracing, demo faults.

One call, `observe_flask_app(app, service)`, from each service's `create_app()`. The tracing part is
services/telemetry/flask.py; metrics and the demo's fault injection plug into it from here.
"""

from __future__ import annotations

from flask import Flask

from services.demo import fault_injection
from services.metrics.flask_metrics import add_flask_metrics
from services.telemetry.flask import instrument_flask_app
from services.web.http_errors import register_error_handlers


def observe_flask_app(app: Flask, service: str) -> None:
    register_error_handlers(app)
    record_request = add_flask_metrics(app)
    instrument_flask_app(app, on_response=record_request)
    # After the instrumentation, whose hook attaches the request's baggage (only with the setting on).
    fault_injection.install_flask_hook(app, service)
