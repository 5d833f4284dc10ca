"""Celery's process lifecycle, traced: one call, `instrument_celery(service)`, where the Celery app is built.

Where the jobs run depends on the worker's pool (`celery worker --pool …`), and so does where tracing must
be set up and flushed:

| pool | jobs run in | tracing set up in | spans flushed in |
|---|---|---|---|
| prefork (default) | forked children | `worker_process_init` (each child) | `worker_process_shutdown` |
| solo | the main process | `worker_init` | atexit, when the worker exits |
| threads | threads of the main process | `worker_init` | atexit, when the worker exits |
| gevent (eventlet: untested) | greenlets of the main process | `worker_init` | atexit, at the exit |

- prefork: no tracer provider in the main process (a provider made before the fork belongs to the
  parent: the children could neither install their own nor flush it when they exit), one per child.
  A child exits with `os._exit`, skipping atexit: hence the explicit flush in `worker_process_shutdown`.
  A child Celery killed because its main process died (SIGKILL) flushed nothing: it now gets a
  parent-death signal of its own and leaves through `worker_process_shutdown` too (parent_death.py).
- every other pool: the jobs run in the one process that sent `worker_init`, so the provider is made
  there, once (`worker_process_init` is never sent for threads and gevent; solo sends it in the main
  process too, where `setup_tracing` is then a no-op: one provider, no "Overriding of current
  TracerProvider" warning). `worker_process_shutdown` is never sent there, and not needed: the main
  process ends with a normal interpreter exit, which runs the atexit flush `setup_tracing` registers.
- gevent and eventlet must monkey-patch the standard library before anything else is imported; Celery
  does that only when the pool is given on the command line (`-P gevent`), never for `worker_pool` in
  the configuration. Unpatched, a "green" pool runs each job blocking the whole worker; `worker_init`
  stops such a worker at start, saying why. The batch processor's export thread is then a greenlet too.
- `setup_logging` (main process) → our JSON logs in every pool (Celery then leaves logging alone).
- celery beat: `beat_init` → its own tracer provider (`beat_service`) and the Celery instrumentation, so
  each scheduled job's trace starts with beat's PRODUCER span.

Parent or link (`TRACEHOP_CELERY_SPAN_LINKS=1`): by default a job's CONSUMER span is the child of the
PRODUCER span that published its message, so the job is in the request's trace. With span links, the
instrumentation (`use_span_links=True`) starts each CONSUMER span as the root of a NEW trace with a link
to the PRODUCER span instead (OpenTelemetry's messaging conventions); what the job does (its HTTP calls,
the jobs it queues) continues that new trace. Read once, by `instrument_celery` and
`instrument_celery_producer`; the mode changes only where CONSUMER spans are made (the worker): the
producer writes the same headers either way.

The process that SENDS tasks (a Flask app) calls `instrument_celery_producer()` once: without the PRODUCER
span's context in the message headers, the worker starts a new trace.

Everything else plugs in through `CeleryHooks` (tracehop's worker adds its metrics server, span
counting, chord links and the demo's switches that way); this module imports none of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import concurrency, signals
from celery.concurrency.prefork import TaskPool as PreforkPool
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.sdk.trace.export import SpanExporter

from services.telemetry import parent_death
from services.telemetry.logs import configure_logging
from services.telemetry.setup import instrument_requests, setup_tracing, shutdown_tracing
from services.web import settings

SPAN_LINKS_VARIABLE = "TRACEHOP_CELERY_SPAN_LINKS"

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
    span_links = span_links_enabled()
    pool_forks: list[bool] = []  # set by worker_init in the main process, inherited by its children

    def set_up_tracing() -> None:
        setup_tracing(service, wrap_exporter=hooks.wrap_exporter)
        instrument_celery_spans(span_links)
        instrument_requests()
        _call(hooks.after_tracing_setup)

    def on_setup_logging(**_: object) -> None:
        configure_logging(service)
        _call(hooks.after_logging_setup)

    def on_worker_init(sender: Any = None, **_: object) -> None:
        refuse_unpatched_green_pool(sender)  # first: nothing else should start in such a worker
        _call(hooks.on_worker_start)
        pool_forks.append(forks_children(sender))
        if not forks_children(sender):
            set_up_tracing()  # the jobs run in this very process: solo, threads, gevent, eventlet
        elif not hooks.trace_in_children:
            set_up_tracing()  # in the main process, before the pool forks: the mistake

    def on_worker_process_init(**_: object) -> None:
        # prefork: in each child. solo: in the main process, after worker_init (then a no-op).
        configure_logging(service)
        if hooks.trace_in_children:
            set_up_tracing()
        if hooks.trace_in_children and hooks.flush_on_child_exit and any(pool_forks):
            # A pool child: Celery SIGKILLs it when its main process dies, queued spans and all; this
            # takes it out through worker_process_shutdown (the flush) instead.
            parent_death.flush_spans_when_parent_dies(shutdown_tracing)

    def on_worker_process_shutdown(**_: object) -> None:
        # prefork children only: they exit with os._exit, which skips atexit.
        parent_death.leaving()  # first: a parent-death signal must not cut the flush short
        if hooks.flush_on_child_exit:
            shutdown_tracing()
        _call(hooks.on_child_exit)

    def on_beat_init(**_: object) -> None:
        # beat publishes from its own single process (no fork): its spans are the roots of scheduled jobs.
        configure_logging(beat_service)
        setup_tracing(beat_service, wrap_exporter=hooks.wrap_exporter)
        instrument_celery_spans(span_links)

    # weak=False: these receivers are closures that nothing else keeps alive.
    signals.setup_logging.connect(on_setup_logging, weak=False)
    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_process_init.connect(on_worker_process_init, weak=False)
    signals.worker_process_shutdown.connect(on_worker_process_shutdown, weak=False)
    signals.beat_init.connect(on_beat_init, weak=False)


def forks_children(worker: Any) -> bool:
    """Whether this worker's pool runs jobs in forked children (prefork) rather than in this process.
    At `worker_init` the pool is still a name or a class (the command line gives a class)."""
    pool = concurrency.get_implementation(getattr(worker, "pool_cls", None) or "prefork")
    return isinstance(pool, type) and issubclass(pool, PreforkPool)


def refuse_unpatched_green_pool(worker: Any) -> None:
    """A gevent or eventlet pool without the monkey patches would run every job blocking the worker (and
    the export greenlet with it): Celery patches only for `-P gevent` on the command line."""
    pool = concurrency.get_implementation(getattr(worker, "pool_cls", None) or "prefork")
    if not getattr(pool, "is_green", False):
        return
    if "gevent" in pool.__module__:
        from gevent import monkey

        patched = monkey.is_module_patched("socket")
    else:
        import eventlet.patcher

        patched = eventlet.patcher.is_monkey_patched("socket")
    if not patched:
        name = pool.__module__.rpartition(".")[2]
        # SystemExit, not an ordinary exception: Celery logs and swallows what a signal receiver raises,
        # and the worker would go on, untraced and blocking.
        raise SystemExit(
            f"the {name} pool needs its monkey patches: choose it on the command line "
            f"(celery worker --pool {name}), not with worker_pool in the configuration"
        )


def span_links_enabled() -> bool:
    """TRACEHOP_CELERY_SPAN_LINKS=1: each job's CONSUMER span starts a new trace, linked to its PRODUCER."""
    return settings.env_bool(SPAN_LINKS_VARIABLE, False)


def instrument_celery_spans(span_links: bool) -> None:
    """The Celery instrumentation, in parent mode (default) or link mode (`use_span_links`, which the
    locked opentelemetry-instrumentation-celery 0.66b1 has). Idempotent, and off when tracing is disabled."""
    if settings.tracing_disabled():
        return
    instrumentor = CeleryInstrumentor()  # a singleton: the first instrument() call sets the mode
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(use_span_links=span_links)


def instrument_celery_producer() -> None:
    """In a process that sends tasks: PRODUCER spans, and the trace context injected into each message."""
    instrument_celery_spans(span_links_enabled())


def _call(hook: Hook | None) -> None:
    if hook is not None:
        hook()
