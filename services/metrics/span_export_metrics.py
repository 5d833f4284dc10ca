"""Counting what happens to spans on their way to the trace backend, as Prometheus metrics.

While the backend is down or too slow, the batch processor's exports fail after the export timeout and
those spans are gone: nothing else would tell. `CountingSpanExporter` wraps the real exporter and counts

    tracehop_spans_exported_total                          spans the backend accepted
    tracehop_spans_dropped_total{reason="export_failed"}   spans of batches the backend did not accept

Under gunicorn and in Celery's prefork children the counters live in PROMETHEUS_MULTIPROC_DIR like every
other metric, so each service's /metrics sums them over its processes.

    tracehop_spans_dropped_total{reason="queue_full"}      spans the batch processor dropped because its
                                                           queue was full (a long outage: export_retry.py)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import Counter

SPANS_EXPORTED = Counter("tracehop_spans_exported_total", "Spans the trace backend accepted.")
SPANS_DROPPED = Counter(
    "tracehop_spans_dropped_total", "Spans that never reached the trace backend, by reason.", ["reason"]
)


class CountingSpanExporter(SpanExporter):
    """Delegates to `inner`, counting each batch's spans as exported or dropped."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:
            SPANS_DROPPED.labels("export_failed").inc(len(spans))
            raise
        if result is SpanExportResult.SUCCESS:
            SPANS_EXPORTED.inc(len(spans))
        else:
            SPANS_DROPPED.labels("export_failed").inc(len(spans))
        return result

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        # The batch processor passes its remaining time only to exporters that take it: so do we.
        if "timeout_millis" in inspect.signature(self.inner.shutdown).parameters:
            self.inner.shutdown(timeout_millis=timeout_millis)  # type: ignore[call-arg]
        else:
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def on_dropped(self, count: int) -> None:
        """Called by the batch processor for spans it dropped from a full queue (export_retry.py)."""
        SPANS_DROPPED.labels("queue_full").inc(count)
