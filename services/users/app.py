"""The users service's app factory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask
from opentelemetry.instrumentation.redis import RedisInstrumentor

from services.telemetry import redis_connection_attributes
from services.telemetry.logs import configure_logging
from services.telemetry.setup import instrument
from services.users.database import redis_client, register_database_errors
from services.users.routes import blueprint
from services.users.store import UserStore
from services.web import settings
from services.web.observe import observe_flask_app

SERVICE = "users"


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(MAX_CONTENT_LENGTH=16 * 1024, **settings.users_config())
    app.config.update(config or {})
    if not app.testing:
        configure_logging(SERVICE)
    # Redis is this service's database, so its commands are spans (the design's `db_query` step).
    # Only here: in the gateway and worker Redis is Celery's broker, whose polling would bury the trace.
    instrument([RedisInstrumentor()])
    if settings.lean_instrumentation():
        # Its connection attributes built once per pool, not per command (the module says why).
        redis_connection_attributes.install()
    else:
        redis_connection_attributes.uninstall()  # one process, one setting: stock means stock
    client = redis_client(app.config["REDIS_URL"])
    app.extensions["user_store"] = UserStore(client)
    app.register_blueprint(blueprint)
    observe_flask_app(app, SERVICE)
    register_database_errors(app)  # a Redis restart: 503 with the trace id, never the generic 500
    return app
