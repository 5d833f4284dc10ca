"""A batch is retried through a backend outage; what is lost anyway (a full queue) is counted.

The backend is the edge here: a scripted exporter stands in for it (fails N times, or blocks), while the
retry wrapper and the SDK's real BatchSpanProcessor are what is tested. The whole path with a paused trace
store is measured by `make chaos` (docs/reliability.md).
"""

from __future__ import annotations

import threading
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from prometheus_client import REGISTRY

from services.metrics.span_export_metrics import CountingSpanExporter
from services.telemetry import export_retry
from services.telemetry.export_retry import DropReportingBatchSpanProcessor, RetryingSpanExporter


class Backend(SpanExporter):
    """Fails the first `failures` exports, then accepts; or blocks while `gate` is clear."""

    def __init__(self, failures: int = 0, gate: threading.Event | None = None) -> None:
        self.failures = failures
        self.gate = gate
        self.attempts = 0
        self.accepted: list[str] = []

    def export(self, spans):
        self.attempts += 1
        if self.gate is not None:
            self.gate.wait(10)
        if self.attempts <= self.failures:
            return SpanExportResult.FAILURE
        self.accepted += [span.name for span in spans]
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def sample(name: str, labels: dict | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_failing_batch_is_sent_again_until_the_backend_takes_it(monkeypatch):
    monkeypatch.setattr(export_retry, "FIRST_PAUSE_S", 0.01)
    backend = Backend(failures=3)
    retrying = RetryingSpanExporter(backend, budget_s=5)
    dropped = sample("tracehop_spans_dropped_total", {"reason": "export_failed"})
    provider = TracerProvider()
    processor = DropReportingBatchSpanProcessor(CountingSpanExporter(retrying), schedule_delay_millis=10)
    provider.add_span_processor(processor)
    provider.get_tracer("t").start_span("kept").end()
    provider.force_flush()
    assert backend.attempts == 4 and backend.accepted == ["kept"]
    assert sample("tracehop_spans_dropped_total", {"reason": "export_failed"}) == dropped
    provider.shutdown()


def test_the_retries_end_with_the_budget_and_the_batch_is_counted_as_dropped(monkeypatch):
    monkeypatch.setattr(export_retry, "FIRST_PAUSE_S", 0.01)
    backend = Backend(failures=10**6)
    exporter = CountingSpanExporter(RetryingSpanExporter(backend, budget_s=0.3))
    dropped = sample("tracehop_spans_dropped_total", {"reason": "export_failed"})
    started = time.monotonic()
    provider = TracerProvider()
    provider.add_span_processor(DropReportingBatchSpanProcessor(exporter, schedule_delay_millis=10))
    provider.get_tracer("t").start_span("lost").end()
    provider.force_flush()
    assert time.monotonic() - started < 2 and backend.attempts > 2
    assert sample("tracehop_spans_dropped_total", {"reason": "export_failed"}) == dropped + 1
    provider.shutdown()


def test_shutdown_stops_the_retries_at_once():
    backend = Backend(failures=10**6)
    retrying = RetryingSpanExporter(backend, budget_s=60)
    retrying.stop_retrying()
    started = time.monotonic()
    assert retrying.export([]) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 1 and backend.attempts == 1


def test_a_full_queue_drops_the_oldest_spans_and_counts_them():
    gate = threading.Event()  # the backend hangs: nothing leaves the queue
    backend = Backend(gate=gate)
    provider = TracerProvider()
    processor = DropReportingBatchSpanProcessor(
        CountingSpanExporter(RetryingSpanExporter(backend, budget_s=0)),
        max_queue_size=4,
        max_export_batch_size=1,
        schedule_delay_millis=10,
    )
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    tracer.start_span("first").end()
    time.sleep(0.2)  # the first span is taken by the hanging export
    before = sample("tracehop_spans_dropped_total", {"reason": "queue_full"})
    for index in range(10):
        tracer.start_span(f"s{index}").end()
    assert sample("tracehop_spans_dropped_total", {"reason": "queue_full"}) == before + 6
    gate.set()
    provider.force_flush()
    assert backend.accepted == ["first", "s6", "s7", "s8", "s9"]  # the newest four were kept
    provider.shutdown()


def test_the_queue_is_sized_for_an_outage_unless_configured(monkeypatch):
    monkeypatch.delenv("OTEL_BSP_MAX_QUEUE_SIZE", raising=False)
    assert export_retry.queue_size() == export_retry.DEFAULT_QUEUE_SIZE == 8192
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "100")
    assert export_retry.queue_size() == 100
