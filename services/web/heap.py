"""The garbage collector in a served gunicorn worker: the startup heap frozen, generation 0 tunable.

Measured with `python -m tracehop.bench.tail` (docs/performance.md, "The traced tail at 100 req/s"): a
traced users worker runs a full (generation 2) collection every few hundred requests, and without a
freeze each one walks every object the worker made at startup — Flask, Werkzeug, redis-py, Celery's
client side, OpenTelemetry's SDK and instrumentations, prometheus_client — about 45 ms of CPU with the
interpreter lock held, during which no request of that worker moves: the largest single stall behind
the traced tail at 100 req/s (the bench's wall-clock p99 did not show the freeze's effect above its
noise). Untraced workers allocate less per request and reached a full collection rarely.

`gc.freeze()` once the app and tracing are loaded moves those objects to the permanent generation,
which no collection walks, so a full collection costs what the requests left behind. The same heap
never becomes garbage while the worker lives (modules, the app, the tracer provider), so freezing it
loses nothing; one `gc.collect()` first so that startup's own cyclic garbage is freed, not frozen.
"""

from __future__ import annotations

import gc

from services.web import settings


def freeze_startup_heap() -> None:
    """Call once per worker after the app and its tracing are loaded (gunicorn's post_worker_init).

    TRACEHOP_GC_FREEZE=false leaves the collector as Python sets it; TRACEHOP_GC_GEN0_THRESHOLD sets
    how many allocations (net of deallocations) start a generation-0 collection (Python's: 700)."""
    gen0 = settings.gc_gen0_threshold()
    if gen0 is not None:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(gen0, gen1, gen2)
    if settings.gc_freeze():
        gc.collect()
        gc.freeze()
