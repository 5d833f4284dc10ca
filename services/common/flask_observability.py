"""Telemetry for a Flask service: spans, metrics, access log, `traceresponse`, JSON errors.

One call, `observe_flask_app(app, service)`, from each service's `create_app()`.
"""

from __future__ import annotations

import os
import time

from flask import Flask, Response, g, request
from loguru import logger
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from prometheus_client import CollectorRegistry, Counter
from prometheus_flask_exporter import NO_PREFIX, PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from services.common import settings
from services.common.http_errors import register_error_handlers
from services.common.telemetry import traceresponse_header

# Probes and scrapes would drown the interesting spans and access-log lines.
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")


def observe_flask_app(app: Flask, service: str) -> None:
    register_error_handlers(app)
    _add_metrics(app)
    _add_access_log_and_traceresponse(app)
    if not settings.tracing_disabled():
        FlaskInstrumentor().instrument_app(app, excluded_urls=",".join(QUIET_PATHS))


def _add_metrics(app: Flask) -> None:
    """prometheus-flask-exporter: `http_request_duration_seconds` and `http_request_total` by url rule.

    Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) the values of all worker processes are summed at
    scrape time; grouping by URL rule (`/api/users/<user_id>`) keeps label cardinality bounded.
    """
    options = dict(defaults_prefix=NO_PREFIX, group_by="url_rule", excluded_paths=["/metrics"])
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics = GunicornInternalPrometheusMetrics(app, **options)
    else:
        # A private registry per app: tests build many apps in one process.
        metrics = PrometheusMetrics(app, registry=CollectorRegistry(), **options)
    app.extensions["prometheus_metrics"] = metrics
    # The design document's own name, so its PromQL (`sum(rate(http_requests_total[5m]))`) works as
    # written; unlike the exporter's counter it also counts requests that matched no route.
    app.extensions["http_requests_total"] = Counter(
        "http_requests_total",
        "HTTP requests answered, by method, route (URL rule) and status.",
        ["method", "route", "status"],
        registry=metrics.registry,
    )


def _add_access_log_and_traceresponse(app: Flask) -> None:
    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        header = traceresponse_header()
        if header:
            response.headers["traceresponse"] = header
        if request.path not in QUIET_PATHS:
            started = g.get("request_started", time.perf_counter())
            route = request.url_rule.rule if request.url_rule else "<unmatched>"
            app.extensions["http_requests_total"].labels(request.method, route, response.status_code).inc()
            logger.info(
                "request",
                method=request.method,
                route=route,
                path=request.path,
                status=response.status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        return response
