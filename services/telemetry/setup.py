"""OpenTelemetry tracing setup, the same for gateway, users and worker.

Call `setup_tracing()` once per process AFTER the process has forked (gunicorn `post_fork`, Celery
`worker_process_init`): the global provider can be set only once, so one set up in a parent is what every
child keeps, with the parent's resource (under compose, gunicorn's master does not even know the service
name yet: `--env` is applied after the config loads). The SDK re-creates its batch thread in a child, so
that mistake still exports spans, under the wrong name: tests/integration/test_compose_start.py guards it.
Call `shutdown_tracing()` on the way out (gunicorn `worker_exit`, Celery `worker_process_shutdown`) so the
spans still queued are exported, within a bounded time.

Everything is configured by the standard `OTEL_*` environment variables (endpoint, sampler, propagators,
batch processor sizes, `OTEL_SDK_DISABLED`); this module only supplies defaults that suit a demo which
must never hang on an absent trace backend.
"""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.processor.baggage import BaggageSpanProcessor
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from services.telemetry import requests_client_attributes
from services.telemetry.export_retry import DropReportingBatchSpanProcessor, RetryingSpanExporter, queue_size
from services.telemetry.lean_tracer import LeanTracerProvider
from services.telemetry.otlp_json_exporter import OTLPJsonSpanExporter
from services.telemetry.propagation import use_w3c_tracestate
from services.web import settings

# An absent or slow backend must cost a request nothing and a shutdown only a few seconds: the SDK's own
# default export timeout is 10 s, and it retries within it.
DEFAULT_EXPORT_TIMEOUT_S = 3.0

# OTEL_EXPORTER_OTLP_TRACES_PROTOCOL / OTEL_EXPORTER_OTLP_PROTOCOL: the OTLP/HTTP encodings we can send.
# Our default is http/json (the specification's is http/protobuf): the same exporter with an encoder that
# costs a third of the SDK's protobuf one (docs/performance.md); Jaeger and our trace store accept both.
EXPORTERS = {"http/json": OTLPJsonSpanExporter, "http/protobuf": OTLPSpanExporter}
DEFAULT_PROTOCOL = "http/json"

# Baggage entries copied onto every span as attributes, so a test (or a person in Jaeger) can see that
# the caller's baggage reached the worker. Only our own namespace: arbitrary baggage from outside callers
# must not turn into span attributes.
BAGGAGE_ATTRIBUTE_PREFIX = "tracehop."

_lock = threading.Lock()
_provider: TracerProvider | None = None
_provider_pid: int | None = None
_retrying: RetryingSpanExporter | None = None


def service_version() -> str:
    try:
        return version("tracehop")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


def build_resource(service_name: str) -> Resource:
    """Our defaults for service.name/version, deployment.environment and process.pid, overridable by
    OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the SDK would let our values win otherwise).

    process.pid says which process set up tracing: built after the fork, as it must be, that is the
    gunicorn worker or Celery pool child whose spans these are (the master's pid would betray a setup
    before the fork). Only the pid: the SDK's ProcessResourceDetector would add the command line too.
    """
    defaults = {
        "service.name": service_name,
        "service.version": service_version(),
        "deployment.environment": settings.deployment_environment(),
        "process.pid": os.getpid(),
    }
    from_environment = OTELResourceDetector().detect().attributes
    resource = Resource.create({**defaults, **from_environment})
    return HashCachedResource(resource.attributes, resource.schema_url)


class HashCachedResource(Resource):
    """A Resource that computes its hash once.

    The OTLP encoder groups every exported span by resource, and `Resource.__hash__` serialises all the
    attributes to JSON each time: 2–2.6 % of the gateway's and users' CPU in `make bench`'s profile. A
    resource never changes after the provider is built, so the hash can be kept.
    """

    def __init__(self, attributes, schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._cached_hash = super().__hash__()

    def __hash__(self) -> int:
        return self._cached_hash

    def __eq__(self, other: object) -> bool:
        return super().__eq__(other)


def _export_timeout_s() -> float | None:
    """None lets the exporter read OTEL_EXPORTER_OTLP[_TRACES]_TIMEOUT itself when one is set."""
    if os.environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or os.environ.get("OTEL_EXPORTER_OTLP_TIMEOUT"):
        return None
    return DEFAULT_EXPORT_TIMEOUT_S


def export_protocol() -> str:
    """The OTLP protocol for spans, read the way the SDK's auto-configuration reads it."""
    name = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
    raw = os.environ.get(name)
    if not raw:
        name, raw = "OTEL_EXPORTER_OTLP_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = (raw or DEFAULT_PROTOCOL).strip().lower()
    if protocol not in EXPORTERS:
        choices = ", ".join(sorted(EXPORTERS))
        raise ValueError(
            f"{name}={raw!r} is not supported here: use one of {choices} (grpc is not installed)"
        )
    return protocol


def otlp_span_exporter() -> SpanExporter:
    """The OTLP/HTTP exporter the protocol setting names, with our default timeout."""
    return EXPORTERS[export_protocol()](timeout=_export_timeout_s())


def setup_tracing(
    service_name: str,
    exporter: SpanExporter | None = None,
    *,
    wrap_exporter: Callable[[SpanExporter], SpanExporter] | None = None,
    register_atexit: bool = True,
) -> TracerProvider | None:
    """Install the process-wide tracer provider; returns None when tracing is disabled.

    Idempotent within one process. `exporter` replaces the OTLP exporter (tests pass an in-memory one).
    `wrap_exporter` wraps whichever exporter is used: tracehop passes the Prometheus counter of exported
    and failed spans (services/metrics/span_export_metrics.py); this module knows nothing of metrics.
    """
    global _provider, _provider_pid, _retrying
    if settings.tracing_disabled():
        return None
    with _lock:
        if _provider is not None and _provider_pid == os.getpid():
            return _provider
        if settings.tracing_setup() == "stock":
            provider = _stock_provider(service_name, exporter)
        else:
            # The SDK's provider with cheaper span creation, proven equal to it (lean_tracer.py).
            provider_class = LeanTracerProvider if settings.lean_tracer() else TracerProvider
            provider = provider_class(resource=build_resource(service_name))
            provider.add_span_processor(BaggageSpanProcessor(_is_own_baggage_key))
            # A batch is retried through a backend outage while new spans wait in a queue sized for one
            # (export_retry.py); `wrap_exporter` sees each batch's final outcome.
            _retrying = RetryingSpanExporter(exporter or otlp_span_exporter())
            exported_to: SpanExporter = _retrying
            if wrap_exporter is not None:
                exported_to = wrap_exporter(exported_to)
            provider.add_span_processor(
                DropReportingBatchSpanProcessor(exported_to, max_queue_size=queue_size())
            )
            use_w3c_tracestate()
        trace.set_tracer_provider(provider)
        _provider, _provider_pid = provider, os.getpid()
    if register_atexit:
        # gunicorn workers and the Celery main process run atexit handlers; prefork children do not,
        # which is why the worker also calls shutdown_tracing() from worker_process_shutdown.
        atexit.register(shutdown_tracing)
    return provider


def _stock_provider(service_name: str, exporter: SpanExporter | None) -> TracerProvider:
    """TRACEHOP_TRACING_SETUP=stock: the provider as OpenTelemetry's Python documentation sets it up, for
    `make bench` to measure tracehop against. The SDK's OTLP/protobuf exporter and batch processor at
    their defaults (10 s timeout; OTEL_BSP_* as set), a plain Resource with the same attributes, and none
    of tracehop's additions: no baggage processor, no export counting, no cached resource hash, the
    library's tracestate parsing."""
    resource = Resource.create(dict(build_resource(service_name).attributes))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter or OTLPSpanExporter()))
    return provider


def _is_own_baggage_key(key: str) -> bool:
    return key.startswith(BAGGAGE_ATTRIBUTE_PREFIX)


def shutdown_tracing() -> None:
    """Export what is still queued and stop the export thread. Bounded by the export timeout."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None and _provider_pid == os.getpid():
        if _retrying is not None:
            _retrying.stop_retrying()
        provider.shutdown()


def current_trace_id() -> str:
    """The current span's trace id as 32 lowercase hex digits, or "" outside a (valid) span."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else ""


def instrument(instrumentors: Sequence[object]) -> None:
    """Apply library instrumentations unless tracing is disabled (then not even their wrappers run,
    so 'tracing off' in the benchmark is a true baseline). Each instrumentor is idempotent."""
    if settings.tracing_disabled():
        return
    for instrumentor in instrumentors:
        if not instrumentor.is_instrumented_by_opentelemetry:  # type: ignore[attr-defined]
            instrumentor.instrument()  # type: ignore[attr-defined]


def instrument_requests() -> None:
    """CLIENT spans and `traceparent` for `requests` calls: the stock instrumentation, with its per-call URL
    work done once in tracehop's setup (requests_client_attributes.py says why; `stock` and
    TRACEHOP_LEAN_INSTRUMENTATION=false keep the instrumentation's own)."""
    if settings.tracing_disabled():
        return
    if settings.lean_instrumentation():
        requests_client_attributes.install()
    else:
        requests_client_attributes.uninstall()  # one process, one setting: stock means stock
    instrument([RequestsInstrumentor()])
