"""Celery's process lifecycle, traced: one call, `instrument_celery(service)`, where the Celery app is built.

Process lifecycle (prefork pool):
- main process: `setup_logging` → our JSON logs (Celery then leaves logging alone). No tracer provider
  here: a BatchSpanProcessor thread created before the fork would not exist in the children.
- each child: `worker_process_init` → logs, tracer provider, Celery (CONSUMER spans) and requests
  instrumentation; `worker_process_shutdown` → flush the spans (prefork children skip atexit handlers).
- celery beat: `beat_init` → its own tracer provider (`beat_service`) and the Celery instrumentation, so
  each scheduled job's trace starts with beat's PRODUCER span.

The process that SENDS tasks (a Flask app) calls `instrument_celery_producer()` once: without the PRODUCER
span's context in the message headers, the worker starts a new trace.

Everything else plugs in through `CeleryHooks` (tracehop's worker adds its metrics server, span
counting, chord links and the demo's switches that way); this module imports none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from celery import signals
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.trace.export import SpanExporter

from services.telemetry.logs import configure_logging
from services.telemetry.setup import instrument, setup_tracing, shutdown_tracing

Hook = Callable[[], None]


@dataclass(frozen=True)
class CeleryHooks:
    """What a worker adds to the traced lifecycle; every field is optional."""

    # Wraps the span exporter of each worker process (e.g. to count exported spans).
    wrap_exporter: Callable[[SpanExporter], SpanExporter] | None = None
    # Main process, right after logging is configured.
    after_logging_setup: Hook | None = None
    # Main process, `worker_init` (before the pool forks).
    on_worker_start: Hook | None = None
    # Each worker process, after its tracer provider and instrumentation are in place.
    after_tracing_setup: Hook | None = None
    # Each pool child, on its way out (after the flush).
    on_child_exit: Hook | None = None
    # The two lifecycle steps a demo can get wrong on purpose: set up tracing in each child (right) or
    # once in the main process before the fork (wrong), and flush when a child exits (right) or not.
    trace_in_children: bool = True
    flush_on_child_exit: bool = True


def instrument_celery(service: str, *, beat_service: str = "beat", hooks: CeleryHooks | None = None) -> None:
    """Connect tracing and logging to the worker's and beat's lifecycle signals. Call once, at import of
    the module that builds the Celery app (the worker imports it before any signal is sent)."""
    hooks = hooks or CeleryHooks()

    def set_up_tracing() -> None:
        setup_tracing(service, wrap_exporter=hooks.wrap_exporter)
        instrument([CeleryInstrumentor(), RequestsInstrumentor()])
        _call(hooks.after_tracing_setup)

    def on_setup_logging(**_: object) -> None:
        configure_logging(service)
        _call(hooks.after_logging_setup)

    def on_worker_init(**_: object) -> None:
        _call(hooks.on_worker_start)
        if not hooks.trace_in_children:
            set_up_tracing()  # in the main process, before the pool forks: the mistake

    def on_worker_process_init(**_: object) -> None:
        configure_logging(service)
        if hooks.trace_in_children:
            set_up_tracing()

    def on_worker_process_shutdown(**_: object) -> None:
        if hooks.flush_on_child_exit:
            shutdown_tracing()
        _call(hooks.on_child_exit)

    def on_beat_init(**_: object) -> None:
        # beat publishes from its own single process (no fork): its spans are the roots of scheduled jobs.
        configure_logging(beat_service)
        setup_tracing(beat_service, wrap_exporter=hooks.wrap_exporter)
        instrument([CeleryInstrumentor()])

    # weak=False: these receivers are closures that nothing else keeps alive.
    signals.setup_logging.connect(on_setup_logging, weak=False)
    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_process_init.connect(on_worker_process_init, weak=False)
    signals.worker_process_shutdown.connect(on_worker_process_shutdown, weak=False)
    signals.beat_init.connect(on_beat_init, weak=False)


def instrument_celery_producer() -> None:
    """In a process that sends tasks: PRODUCER spans, and the trace context injected into each message."""
    instrument([CeleryInstrumentor()])


def _call(hook: Hook | None) -> None:
    if hook is not None:
        hook()
