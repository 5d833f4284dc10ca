"""Telemetry for a Flask service: spans, metrics, access log, `traceresponse`, JSON errors.

One call, `observe_flask_app(app, service)`, from each service's `create_app()`.
"""

from __future__ import annotations

import os
import re
import time

from flask import Flask, Response, g, request
from loguru import logger
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_flask_exporter import NO_PREFIX, PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from services.common import exemplars, fault_injection, settings
from services.common.http_errors import register_error_handlers
from services.common.logging_setup import NO_SPAN_EVENT
from services.common.process_metrics import ProcessTreeCollector
from services.common.safe_attributes import mask_emails
from services.common.telemetry import traceresponse_header

# Probes and scrapes would drown the interesting spans and access-log lines: these routes are not traced
# (so their answers carry no traceresponse) and not logged. Only where the app serves them: any other
# request to such a path (users has no /readyz) is an ordinary 404 with its trace.
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")

# prometheus_client's default buckets, named: the exemplar of a request goes on the bucket its duration
# falls into, so the exemplars and the histogram must use the same ones.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# The access line says what the SERVER span already says (method, route, status, duration): as a span
# event it would only double the attributes each request pays to collect and export.
_access_log = logger.bind(**{NO_SPAN_EVENT: True})


def observe_flask_app(app: Flask, service: str) -> None:
    register_error_handlers(app)
    _add_metrics(app)
    _add_access_log_and_traceresponse(app)
    if not settings.tracing_disabled():
        FlaskInstrumentor().instrument_app(app, excluded_urls=excluded_urls(quiet_paths(app)))
    # After the instrumentation, whose hook attaches the request's baggage (only with the setting on).
    fault_injection.install_flask_hook(app, service)


def quiet_paths(app: Flask) -> frozenset[str]:
    """The QUIET_PATHS `app` serves (call it after every route, /metrics included, is registered)."""
    served = {rule.rule for rule in app.url_map.iter_rules()}
    return frozenset(path for path in QUIET_PATHS if path in served)


def excluded_urls(paths: frozenset[str]) -> str:
    """The instrumentation's excluded_urls for exactly these paths.

    It searches each entry as a regular expression anywhere in the full URL, query string included: a
    bare "/healthz" would also leave /api/users/healthz or /api/users/1?next=/metrics untraced, and their
    error answers without a trace id. Anchored to the path, only the probe itself is excluded.
    """
    return ",".join(rf"^[a-z]+://[^/]+{re.escape(path)}(?:\?|$)" for path in sorted(paths))


def _add_metrics(app: Flask) -> None:
    """prometheus-flask-exporter: `http_request_duration_seconds` and `http_request_total` by url rule.

    Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) the values of all worker processes are summed at
    scrape time; grouping by URL rule (`/api/users/<user_id>`) keeps label cardinality bounded.
    """
    options = dict(
        defaults_prefix=NO_PREFIX,
        group_by="url_rule",
        excluded_paths=["/metrics"],
        buckets=HTTP_DURATION_BUCKETS,
    )
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics = _GunicornMetrics(app, **options)
    else:
        # A private registry per app: tests build many apps in one process. No gunicorn: this process
        # is the root of its tree.
        metrics = PrometheusMetrics(app, registry=CollectorRegistry(), **options)
        metrics.registry.register(ProcessTreeCollector())
    app.extensions["prometheus_metrics"] = metrics
    # The design document's own name, so its PromQL (`sum(rate(http_requests_total[5m]))`) works as
    # written; unlike the exporter's counter it also counts requests that matched no route.
    app.extensions["http_requests_total"] = Counter(
        "http_requests_total",
        "HTTP requests answered, by method, route (URL rule) and status.",
        ["method", "route", "status"],
        registry=metrics.registry,
    )


class _GunicornMetrics(GunicornInternalPrometheusMetrics):
    """/metrics of a gunicorn worker: every worker's values summed, plus the process tree's resources.

    The exporter builds a fresh registry holding only the MultiProcessCollector for each scrape; ours
    holds the same collector, wrapped to attach the exemplars (trace ids) every worker recorded, plus
    ProcessTreeCollector, rooted at gunicorn's master (this worker's parent), so the master and every
    worker report their CPU, memory and file descriptors.
    """

    def generate_metrics(self, accept_header: str | None = None, names: list[str] | None = None):  # noqa: ANN201
        registry = CollectorRegistry()
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
        registry.register(exemplars.ExemplarCollector(MultiProcessCollector(None, directory), directory))
        registry.register(ProcessTreeCollector(root_pid=os.getppid, root_role="master", child_role="worker"))
        if names:
            registry = registry.restricted_registry(names)
        encode, content_type = choose_encoder(accept_header)
        return encode(registry).decode("utf-8"), content_type


def _add_access_log_and_traceresponse(app: Flask) -> None:
    quiet = quiet_paths(app)

    @app.before_request
    def _start_timer() -> None:
        g.request_started = time.perf_counter()

    @app.after_request
    def _finish(response: Response) -> Response:
        header = traceresponse_header()
        if header:
            response.headers["traceresponse"] = header
        if request.path not in quiet:
            started = g.get("request_started", time.perf_counter())
            duration = time.perf_counter() - started
            route = request.url_rule.rule if request.url_rule else "<unmatched>"
            # This request's trace as the exemplar of its bucket of http_request_duration_seconds, with
            # the exporter's labels exactly (its url_rule of an unmatched request is "None").
            exemplars.record(
                "http_request_duration_seconds",
                {
                    "method": request.method,
                    "status": str(response.status_code),
                    "url_rule": str(request.url_rule),
                },
                duration,
                HTTP_DURATION_BUCKETS,
            )
            app.extensions["http_requests_total"].labels(request.method, route, response.status_code).inc()
            _access_log.info(
                "request",
                method=request.method,
                route=route,
                path=mask_emails(request.path),  # the caller's text: it may hold an e-mail address
                status=response.status_code,
                duration_ms=round(duration * 1000, 3),
            )
        return response
