"""The gateway's app factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor

from services.common import telemetry
from services.common.flask_observability import observe_flask_app
from services.common.logging_setup import configure_logging
from services.common.users_client import UsersClient
from services.gateway.job_queue import JobQueue
from services.gateway.routes import blueprint

SERVICE = "gateway"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024)
    app.config.update(config or {})
    if not app.testing:
        configure_logging(SERVICE)
    # requests: the CLIENT span and `traceparent` on the call to users. Celery: the PRODUCER span and
    # the context injected into the task message headers — without it the worker starts a new trace.
    telemetry.instrument([RequestsInstrumentor(), CeleryInstrumentor()])
    app.extensions["users_client"] = app.config.get("USERS_CLIENT") or UsersClient()
    app.extensions["job_queue"] = app.config.get("JOB_QUEUE") or JobQueue()
    app.register_blueprint(blueprint)
    observe_flask_app(app, SERVICE)
    return app
