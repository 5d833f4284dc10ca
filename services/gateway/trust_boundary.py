"""The gateway is where outside callers meet our system: what of their trace context do we accept?

Two settings decide (W3C Trace Context calls this "crossing a trust boundary"):

- TRACEHOP_TRUST_INCOMING_TRACE (default true): true continues the caller's trace (their `traceparent`
  becomes our parent, their `tracestate` travels on). false restarts it: our SERVER span starts a new trace
  and keeps a span LINK to the caller's context, so the two traces can still be joined by whoever may see
  both, while an outside caller cannot choose our trace ids or sampling decision.
- TRACEHOP_BAGGAGE_ALLOWLIST (default `tracehop.*`) and TRACEHOP_BAGGAGE_MAX_BYTES (default 1024): the
  caller's `baggage` entries that travel on to users and the worker (see baggage_policy.py).

- Personal data in URLs: a caller may put an e-mail address in a path or query string (`/api/users/ada@…`).
  The SERVER span's URL attributes are masked like every other attribute (services/telemetry/safe_attributes),
  and a request that matched no route gets a span name without its path (the path is the caller's text).

It works on the WSGI environ before the Flask instrumentation extracts context from it: a WSGI
middleware rewrites or removes the headers (in place, so it does not matter which wrapper is outermost),
and a `before_request` hook, registered after the instrumentation's own, adds the link to the new span
and records on it what the boundary did.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, request
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import wsgi_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.gateway.baggage_policy import BaggagePolicy
from services.telemetry.propagation import use_w3c_tracestate
from services.telemetry.safe_attributes import mask_emails

CALLER_CONTEXT_KEY = "tracehop.caller_span_context"
BAGGAGE_DROPPED_KEY = "tracehop.baggage_dropped"
TRACE_HEADERS = ("HTTP_TRACEPARENT", "HTTP_TRACESTATE")
# Where the instrumentation puts the caller's URL (old and new HTTP semantic conventions).
URL_ATTRIBUTES = ("http.target", "http.url", "url.path", "url.query", "url.full")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class TrustSettings:
    trust_incoming_trace: bool
    baggage: BaggagePolicy

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrustSettings:
        """From the app's config keys TRUST_INCOMING_TRACE, BAGGAGE_ALLOWLIST and BAGGAGE_MAX_BYTES."""
        return cls(
            trust_incoming_trace=bool(config["TRUST_INCOMING_TRACE"]),
            baggage=BaggagePolicy.from_setting(config["BAGGAGE_ALLOWLIST"], config["BAGGAGE_MAX_BYTES"]),
        )


class TrustBoundaryMiddleware:
    """Rewrites the trace-context headers of each request according to `TrustSettings`."""

    def __init__(self, app: WsgiApp, trust: TrustSettings) -> None:
        self.app = app
        self.trust = trust
        # Only to read the caller's traceparent for the link; never installed globally.
        self._reader = TraceContextTextMapPropagator()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not self.trust.trust_incoming_trace:
            self._restart_trace(environ)
        self._filter_baggage(environ)
        return self.app(environ, start_response)

    def _restart_trace(self, environ: dict[str, Any]) -> None:
        if "HTTP_TRACEPARENT" not in environ:
            return
        caller = trace.get_current_span(self._reader.extract(environ, getter=wsgi_getter)).get_span_context()
        if caller.is_valid:
            environ[CALLER_CONTEXT_KEY] = caller
        # "Vendors SHOULD clean up tracestate collection on traceparent restart."
        for name in TRACE_HEADERS:
            environ.pop(name, None)

    def _filter_baggage(self, environ: dict[str, Any]) -> None:
        header = environ.get("HTTP_BAGGAGE")
        if header is None:
            return
        filtered = self.trust.baggage.filter(header)
        if filtered.dropped:
            environ[BAGGAGE_DROPPED_KEY] = filtered.dropped
        if filtered.header:
            environ["HTTP_BAGGAGE"] = filtered.header
        else:
            del environ["HTTP_BAGGAGE"]


def install_trust_boundary(app: Flask, trust: TrustSettings) -> None:
    """Call after the Flask instrumentation is applied (its span must exist when the hook runs)."""
    # Also the edge's tracestate parsing: members are kept one by one (services/telemetry/tracestate.py).
    use_w3c_tracestate()
    app.wsgi_app = TrustBoundaryMiddleware(app.wsgi_app, trust)  # type: ignore[method-assign]
    app.extensions["trust_boundary"] = trust

    @app.before_request
    def _record_boundary_on_span() -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        caller = request.environ.get(CALLER_CONTEXT_KEY)
        if caller is not None:
            span.add_link(caller, {"link.reason": "trust_boundary_restart"})
            span.set_attribute("edge.trace_restarted", True)
        dropped = request.environ.get(BAGGAGE_DROPPED_KEY)
        if dropped:
            span.set_attribute("edge.baggage_dropped", dropped)
        _mask_url(span)


def _mask_url(span: trace.Span) -> None:
    """E-mail addresses out of the URL attributes, the raw path out of an unmatched request's name."""
    if request.url_rule is None:
        span.update_name(request.method)
    recorded = getattr(span, "attributes", None) or {}  # an SDK span exposes what it has recorded
    for key in URL_ATTRIBUTES:
        value = recorded.get(key)
        if isinstance(value, str) and "@" in value:
            span.set_attribute(key, mask_emails(value))
