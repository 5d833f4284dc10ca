"""Riding out a trace backend outage without losing spans: retry a batch, queue the rest, within a bound.

The batch processor hands one batch at a time to its exporter, on its own thread, and drops the batch when
the export fails. A backend paused or restarting for longer than the export timeout (3 s here) therefore
lost every batch of the outage: 495 traces in a 20 s pause at 40 req/s. `RetryingSpanExporter` wraps any
span exporter (the OTLP protobuf one or the JSON one) and tries the same batch again, with a doubling
pause (0.5 s … 5 s), for up to TRACEHOP_EXPORT_RETRY_S (default 60 s). Meanwhile new spans wait in the
batch processor's queue, which `queue_size()` makes large enough for such an outage:

    OTEL_BSP_MAX_QUEUE_SIZE   default here 8192 spans (the SDK's: 2048)

At 40 req/s the busiest process (a users worker of two) ends ~150 spans a second, so 8192 spans hold
about 50 s; measured memory: see docs/reliability.md ("Trace backend outages"). A longer outage fills the
queue: the oldest spans are dropped and counted (`tracehop_spans_dropped_total{reason="queue_full"}`),
and a batch that still fails after the retry budget is counted as `export_failed`.

Retries stop at once on shutdown, so a process exiting during an outage waits no longer than before.
Re-sent batches are harmless: the trace store keeps one row per (trace id, span id).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from services.web import settings

DEFAULT_QUEUE_SIZE = 8192
FIRST_PAUSE_S = 0.5
MAX_PAUSE_S = 5.0


def queue_size() -> int:
    """The batch processor's queue size: OTEL_BSP_MAX_QUEUE_SIZE when set, else DEFAULT_QUEUE_SIZE."""
    return settings.env_int("OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_QUEUE_SIZE)


def retry_budget_s() -> float:
    return settings.env_float("TRACEHOP_EXPORT_RETRY_S", 60.0)


class RetryingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, budget_s: float | None = None) -> None:
        self.inner = inner
        self.budget_s = retry_budget_s() if budget_s is None else budget_s
        self._stopping = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        deadline = time.monotonic() + self.budget_s
        pause = FIRST_PAUSE_S
        while True:
            try:
                result = self.inner.export(spans)
            except Exception:
                result = SpanExportResult.FAILURE
            if result is SpanExportResult.SUCCESS:
                return result
            if self._stopping.is_set() or time.monotonic() + pause > deadline:
                return result
            self._stopping.wait(pause)
            pause = min(MAX_PAUSE_S, pause * 2)

    def stop_retrying(self) -> None:
        """From now on one attempt per batch: a process shutting down must not wait out an outage."""
        self._stopping.set()

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self._stopping.set()
        # The exporter's own shutdown, with the time the batch processor has left when it takes one.
        if "timeout_millis" in inspect.signature(self.inner.shutdown).parameters:
            self.inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)


class DropReportingBatchSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor, reporting each span it drops because its queue is full.

    The SDK only logs "Queue full, dropping span" (its queue is a bounded deque that drops the oldest).
    This looks at the queue's length before each span goes in and calls `on_dropped(count)` of the
    exporter it was given, when the exporter has that method. The queue is a private attribute of the SDK
    (1.45); without it nothing is reported and nothing breaks.
    """

    def __init__(self, span_exporter: SpanExporter, **options: object) -> None:
        super().__init__(span_exporter, **options)  # type: ignore[arg-type]
        self._on_dropped = getattr(span_exporter, "on_dropped", None)

    def on_end(self, span: ReadableSpan) -> None:
        queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)
        full = queue is not None and queue.maxlen is not None and len(queue) >= queue.maxlen
        if full and self._on_dropped is not None:
            self._on_dropped(1)
        super().on_end(span)
