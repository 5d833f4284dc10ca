"""Prometheus metrics of a Flask service: request duration and count by route, with exemplars.

`add_flask_metrics(app)` installs prometheus-flask-exporter (and, without gunicorn, the process metrics)
and returns the per-request recorder that services/telemetry/flask.py calls as its `on_response` hook.
"""

from __future__ import annotations

import os

from flask import Flask, Request, Response
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_flask_exporter import NO_PREFIX, PrometheusMetrics
from prometheus_flask_exporter.multiprocess import GunicornInternalPrometheusMetrics

from services.metrics import exemplars
from services.metrics.process_metrics import ProcessTreeCollector
from services.telemetry.flask import ResponseObserver
from services.web import settings

# prometheus_client's default buckets, named: the exemplar of a request goes on the bucket its duration
# falls into, so the exemplars and the histogram must use the same ones.
HTTP_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def add_flask_metrics(app: Flask) -> ResponseObserver:
    """prometheus-flask-exporter: `http_request_duration_seconds` and `http_request_total` by url rule.

    Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) the values of all worker processes are summed at
    scrape time; grouping by URL rule (`/api/users/<user_id>`) keeps label cardinality bounded.
    Returns the recorder of each request's exemplar and `http_requests_total`.
    """
    options = dict(
        defaults_prefix=NO_PREFIX,
        group_by="url_rule",
        excluded_paths=["/metrics"],
        buckets=HTTP_DURATION_BUCKETS,
    )
    if settings.prometheus_multiproc_dir():
        metrics = _GunicornMetrics(app, **options)
    else:
        # A private registry per app: tests build many apps in one process. No gunicorn: this process
        # is the root of its tree.
        metrics = PrometheusMetrics(app, registry=CollectorRegistry(), **options)
        metrics.registry.register(ProcessTreeCollector())
    app.extensions["prometheus_metrics"] = metrics
    # The design document's own name, so its PromQL (`sum(rate(http_requests_total[5m]))`) works as
    # written; unlike the exporter's counter it also counts requests that matched no route.
    requests_total = Counter(
        "http_requests_total",
        "HTTP requests answered, by method, route (URL rule) and status.",
        ["method", "route", "status"],
        registry=metrics.registry,
    )
    app.extensions["http_requests_total"] = requests_total

    def record(request: Request, response: Response, duration: float) -> None:
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
        route = request.url_rule.rule if request.url_rule else "<unmatched>"
        requests_total.labels(request.method, route, response.status_code).inc()

    return record


class _GunicornMetrics(GunicornInternalPrometheusMetrics):
    """/metrics of a gunicorn worker: every worker's values summed, plus the process tree's resources.

    The exporter builds a fresh registry holding only the MultiProcessCollector for each scrape; ours
    holds the same collector, wrapped to attach the exemplars (trace ids) every worker recorded, plus
    ProcessTreeCollector, rooted at gunicorn's master (this worker's parent), so the master and every
    worker report their CPU, memory and file descriptors.
    """

    def generate_metrics(self, accept_header: str | None = None, names: list[str] | None = None):
        registry = CollectorRegistry()
        directory = settings.prometheus_multiproc_dir()
        registry.register(exemplars.ExemplarCollector(MultiProcessCollector(None, directory), directory))
        registry.register(ProcessTreeCollector(root_pid=os.getppid, root_role="master", child_role="worker"))
        if names:
            registry = registry.restricted_registry(names)
        encode, content_type = choose_encoder(accept_header)
        return encode(registry).decode("utf-8"), content_type
