"""Tracing for a Flask app: SERVER spans, the `traceresponse` header and one JSON access line per request.

One call, `instrument_flask_app(app)`, from the app factory. Outgoing `requests` calls get their CLIENT
spans and `traceparent` from `instrument_requests()` (setup.py). Metrics plug in through
`on_response` (tracehop passes services/metrics/flask_metrics.py's recorder); this module imports none.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from flask import Flask, Request, Response, g, request
from loguru import logger
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from services.telemetry import flask_request_attributes, flask_request_url
from services.telemetry.logs import NO_SPAN_EVENT
from services.telemetry.safe_attributes import mask_emails
from services.web import settings

# Probes and scrapes would drown the interesting spans and access-log lines: these routes are not traced
# (so their answers carry no traceresponse) and not logged. Only where the app serves them: any other
# request to such a path (users has no /readyz) is an ordinary 404 with its trace.
QUIET_PATHS = ("/healthz", "/readyz", "/metrics")

# Called after each request outside the quiet paths, inside its span, with its duration in seconds.
ResponseObserver = Callable[[Request, Response, float], None]

# The access line says what the SERVER span already says (method, route, status, duration): as a span
# event it would only double the attributes each request pays to collect and export.
_access_log = logger.bind(**{NO_SPAN_EVENT: True})


def instrument_flask_app(app: Flask, *, on_response: ResponseObserver | None = None) -> None:
    """SERVER spans (unless tracing is disabled), `traceresponse`, the access log, and `on_response`.

    Call it once every route is registered (/metrics included): the routes it leaves untraced are the
    QUIET_PATHS the app serves at that moment.
    """
    quiet = quiet_paths(app)
    _add_access_log_and_traceresponse(app, on_response, quiet)
    if not settings.tracing_disabled():
        if settings.lean_instrumentation():
            # The stock instrumentation with its per-request attribute work done once, and the request
            # URL its excluded-URL check reads built without a re-parse that changes nothing (the modules
            # say why).
            flask_request_attributes.install(app)
            flask_request_url.install(app)
        else:
            flask_request_attributes.uninstall()  # one process, one setting: stock means stock
        FlaskInstrumentor().instrument_app(
            app, excluded_urls=excluded_urls(quiet), **instrumentation_options()
        )


def instrumentation_options() -> dict[str, bool]:
    """What tracehop's setup changes in the Flask instrumentation's defaults (`stock` keeps them all).

    `enable_commenter=False`: by default every request also builds a dict of framework, controller and
    route and attaches it to the context for SQLCommenter, which only SQL database instrumentations read
    (tracehop has none): a context copy and three request lookups per request, and no span changes.
    """
    if settings.tracing_setup() == "stock":
        return {}
    return {"enable_commenter": False}


def quiet_paths(app: Flask) -> frozenset[str]:
    """The QUIET_PATHS `app` serves."""
    served = {rule.rule for rule in app.url_map.iter_rules()}
    return frozenset(path for path in QUIET_PATHS if path in served)


def excluded_urls(paths: frozenset[str]) -> str:
    """The instrumentation's excluded_urls for exactly these paths.

    It searches each entry as a regular expression anywhere in the full URL, query string included: a
    bare "/healthz" would also leave /api/users/healthz or /api/users/1?next=/metrics untraced, and their
    error answers without a trace id. Anchored to the path, only the probe itself is excluded.
    """
    return ",".join(rf"^[a-z]+://[^/]+{re.escape(path)}(?:\?|$)" for path in sorted(paths))


def traceresponse_header() -> str | None:
    """The W3C Trace Context Level 2 `traceresponse` value for the current span, or None outside one."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return (
        f"00-{trace.format_trace_id(context.trace_id)}-{trace.format_span_id(context.span_id)}"
        f"-{int(context.trace_flags):02x}"
    )


def _add_access_log_and_traceresponse(
    app: Flask, on_response: ResponseObserver | None, quiet: frozenset[str]
) -> None:
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
            if on_response is not None:
                on_response(request, response, duration)
            _access_log.info(
                "request",
                method=request.method,
                route=route,
                path=mask_emails(request.path),  # the caller's text: it may hold an e-mail address
                status=response.status_code,
                duration_ms=round(duration * 1000, 3),
            )
        return response
