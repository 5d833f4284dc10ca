"""`GET /api/v3/trace-summaries`: one summary per trace, computed from its stored spans.

Follows Jaeger 2.20's querysvc/summary.go summarizeTrace and apiv3/grpc_handler.go toProtoTraceSummaries
(cmd/jaeger/internal/extension/jaegerquery/): the root is the earliest-starting span without a parent, an
orphan a span whose parent is not in the trace, services are sorted by name (a resource without
service.name counts as ""), and the JSON is proto3's: fields at zero omitted, the two fixed64 times as
decimal strings. Jaeger first runs its adjusters (clock skew, deduplication) over the trace; the store
summarises the spans as received.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

STATUS_ERROR = 2


def summarize_trace(spans: Iterable[tuple[str, SpanProto]]) -> dict[str, Any]:
    """The TraceSummary JSON of one trace from its (service name, span) pairs, in stored order."""
    spans = list(spans)
    span_ids = {span.span_id for _, span in spans}
    per_service: dict[str, list[int]] = {}  # service -> [span count, error span count]
    root: tuple[int, str, str] | None = None  # (start, service, name)
    errors = orphans = 0
    for service, span in spans:
        counts = per_service.setdefault(service, [0, 0])
        counts[0] += 1
        if span.status.code == STATUS_ERROR:
            counts[1] += 1
            errors += 1
        if not span.parent_span_id:
            # Among spans without a parent, the earliest start; the first seen on a tie.
            if root is None or span.start_time_unix_nano < root[0]:
                root = (span.start_time_unix_nano, service, span.name)
        elif span.parent_span_id not in span_ids:
            orphans += 1
    summary = {
        "traceId": spans[0][1].trace_id.hex(),
        "rootServiceName": root[1] if root else "",
        "rootOperationName": root[2] if root else "",
        "minStartTimeUnixNano": str(min(span.start_time_unix_nano for _, span in spans)),
        "maxEndTimeUnixNano": str(max(span.end_time_unix_nano for _, span in spans)),
        "spanCount": len(spans),
        "errorSpanCount": errors,
        "orphanSpanCount": orphans,
        "services": [
            _without_zeros({"name": name, "spanCount": count, "errorSpanCount": error_count})
            for name, (count, error_count) in sorted(per_service.items())
        ],
    }
    return _without_zeros(summary)


def _without_zeros(document: dict[str, Any]) -> dict[str, Any]:
    # proto3 JSON leaves out fields at their default value ("" , 0, "0" for a fixed64 time).
    return {key: value for key, value in document.items() if value not in ("", 0, "0", [])}
