"""Spans lost on the way to the trace backend are counted (tracehop_spans_dropped_total)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import REGISTRY

from services.metrics.span_export_metrics import CountingSpanExporter


class FakeExporter(SpanExporter):
    def __init__(self, result: SpanExportResult | Exception) -> None:
        self.result = result
        self.shutdown_with: dict | None = None

    def export(self, spans):
        if isinstance(self.result, Exception):
            raise self.result
        return self.result

    def shutdown(self, timeout_millis: int = 30_000) -> None:
        self.shutdown_with = {"timeout_millis": timeout_millis}


def dropped() -> float:
    return REGISTRY.get_sample_value("tracehop_spans_dropped_total", {"reason": "export_failed"}) or 0.0


def exported() -> float:
    return REGISTRY.get_sample_value("tracehop_spans_exported_total") or 0.0


def end_spans(exporter: SpanExporter, count: int) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    for _ in range(count):
        provider.get_tracer("test").start_span("s").end()


def test_accepted_spans_are_counted_as_exported():
    before = (exported(), dropped())
    end_spans(CountingSpanExporter(FakeExporter(SpanExportResult.SUCCESS)), 3)
    assert (exported(), dropped()) == (before[0] + 3, before[1])


def test_a_failed_export_counts_its_spans_as_dropped():
    before = (exported(), dropped())
    end_spans(CountingSpanExporter(FakeExporter(SpanExportResult.FAILURE)), 2)
    assert (exported(), dropped()) == (before[0], before[1] + 2)


def test_an_exporter_that_raises_is_counted_and_the_error_kept():
    before = dropped()
    counting = CountingSpanExporter(FakeExporter(ConnectionError("backend gone")))
    with pytest.raises(ConnectionError):
        counting.export([object(), object()])  # type: ignore[list-item]
    assert dropped() == before + 2


def test_shutdown_passes_the_remaining_time_on():
    inner = FakeExporter(SpanExportResult.SUCCESS)
    CountingSpanExporter(inner).shutdown(timeout_millis=1234)
    assert inner.shutdown_with == {"timeout_millis": 1234}
