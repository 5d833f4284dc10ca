"""The gateway's app factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from flask import Flask

from services.clients.users_client import UsersClient
from services.demo import broken_on_purpose
from services.gateway.conformance import register_conformance_endpoint
from services.gateway.idempotency import IdempotencyStore
from services.gateway.job_queue import JobQueue
from services.gateway.openapi import blueprint as openapi_blueprint
from services.gateway.routes import blueprint
from services.gateway.trust_boundary import TrustSettings, install_trust_boundary
from services.gateway.workflow_routes import blueprint as workflow_blueprint
from services.telemetry.celery import instrument_celery_producer
from services.telemetry.logs import configure_logging
from services.telemetry.setup import instrument_requests
from services.web import settings
from services.web.observe import observe_flask_app
from services.worker.celery_app import app as celery_app
from services.worker.job_ledger import start_reconciler

SERVICE = "gateway"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(MAX_CONTENT_LENGTH=16 * 1024, **settings.gateway_config())
    app.config.update(config or {})
    if not app.testing:
        configure_logging(SERVICE)
    # requests: the CLIENT span and `traceparent` on the call to users. Celery: the PRODUCER span and
    # the context injected into the task message headers — without it the worker starts a new trace.
    # (Broken on purpose #1 leaves Celery out: the worker's spans then start traces of their own.)
    broken_on_purpose.warn_if_any(SERVICE)
    instrument_requests()
    if not broken_on_purpose.UNINSTRUMENTED_PRODUCER.on:
        instrument_celery_producer()
    # The clients, built from the settings in app.config (a test passes its own settings, not clients).
    app.extensions["users_client"] = UsersClient(
        app.config["USERS_URL"], app.config["SERVICE_TOKEN"], app.config["USERS_TIMEOUT_S"]
    )
    app.extensions["job_queue"] = JobQueue(app.config["REDIS_URL"])
    app.extensions["idempotency"] = IdempotencyStore(
        redis.Redis.from_url(app.config["REDIS_URL"], socket_timeout=2, socket_connect_timeout=2)
    )
    app.register_blueprint(blueprint)
    app.register_blueprint(openapi_blueprint)
    app.register_blueprint(workflow_blueprint)  # chain, chord, countdown, job queueing a job
    register_conformance_endpoint(app)  # only with TRACEHOP_TRACECONTEXT_TEST=1
    observe_flask_app(app, SERVICE)
    # After the instrumentation: the boundary's hook links the span the instrumentation has just started.
    install_trust_boundary(app, TrustSettings.from_config(app.config))
    if not app.testing:
        # In each gunicorn worker process (the app is created after the fork): publishes again a job
        # that was accepted but never started (services/worker/job_ledger.py).
        start_reconciler(celery_app)
    return app
