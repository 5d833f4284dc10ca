"""gunicorn hooks for tracing and logs, for a gunicorn config file to call (services/web/gunicorn_conf.py).

    from services.telemetry import gunicorn_hooks
    logger_class = gunicorn_hooks.LoguruLogger
    def post_fork(server, worker): gunicorn_hooks.post_fork(server, worker)
    def worker_exit(server, worker): gunicorn_hooks.worker_exit(server, worker)

Tracing is set up in each worker AFTER the fork (post_fork): `--env OTEL_SERVICE_NAME=…` is applied only
after gunicorn has loaded its config, and a provider set up in the master would be every worker's, for
good (see services/telemetry/setup.py). worker_exit flushes the spans still queued.

With gevent workers, call post_fork from gunicorn's `post_worker_init` hook instead: gevent patches
threads and sockets only after the fork, and the span processor's thread and its exporter's connection
must be created after that (services/web/gunicorn_public_conf.py does so for the gateway).
"""

from __future__ import annotations

from collections.abc import Callable

from gunicorn.glogging import Logger as _GunicornLogger
from opentelemetry.sdk.trace.export import SpanExporter

from services.telemetry.logs import configure_logging, route_stdlib_logging
from services.telemetry.setup import setup_tracing, shutdown_tracing
from services.web import settings


def service_name() -> str:
    # Read when needed, not at import: gunicorn applies `--env OTEL_SERVICE_NAME=…` after loading the config.
    return settings.service_name()


class LoguruLogger(_GunicornLogger):
    """gunicorn's own messages (boot, worker exits, errors) as JSON lines in the service's log."""

    def setup(self, cfg):
        super().setup(cfg)
        configure_logging(service_name())
        route_stdlib_logging(settings.log_level())


def post_fork(
    server,
    worker,
    *,
    wrap_exporter: Callable[[SpanExporter], SpanExporter] | None = None,
) -> None:
    configure_logging(service_name())
    setup_tracing(service_name(), wrap_exporter=wrap_exporter)


def worker_exit(server, worker) -> None:
    shutdown_tracing()
