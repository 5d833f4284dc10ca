"""What SpanDatabase.insert stores of one export request: its rows and index terms, ready for SQLite.

Two makers give the same groups: `from_request` reads a decoded ExportTraceServiceRequest (protobuf
bodies, and OTLP/JSON that json_format decodes), and otlp_json_fast.decode_batch builds them straight
from parsed OTLP/JSON, without the request and without reading each attribute back out of protobuf:
that reading (and the span's columns) cost about a quarter of the store's CPU per span.
tests/unit/test_otlp_json_fast_documents.py checks that both store the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store import indexing

INT64_MAX = 2**63 - 1  # SQLite integers are signed 64-bit; OTLP timestamps are fixed64

# One span: trace id, span id and parent span id in hex, name, kind, start and end (ns, at most
# INT64_MAX), status code, the serialised Span, and its attribute index terms (indexing.py).
SpanEntry = tuple[str, str, str, str, int, int, int, int, bytes, Iterable[tuple[str, str]]]


@dataclass(frozen=True, slots=True)
class ScopeGroup:
    """One received scopeSpans entry: the scopes table's body (the entry without its spans) and spans."""

    key: bytes
    spans: list[SpanEntry]


@dataclass(frozen=True, slots=True)
class ResourceGroup:
    """One received resourceSpans entry: the resources table's body, the entry itself (for the resource's
    attribute rows, when it is stored first), its service.name and its scope groups."""

    key: bytes
    resource_spans: ResourceSpans
    service: str
    scopes: list[ScopeGroup]


def from_request(request: ExportTraceServiceRequest) -> list[ResourceGroup]:
    return [
        ResourceGroup(
            resource_key(resource_spans),
            resource_spans,
            service_name(resource_spans),
            [
                ScopeGroup(scope_key(scope_spans), [span_entry(span) for span in scope_spans.spans])
                for scope_spans in resource_spans.scope_spans
            ],
        )
        for resource_spans in request.resource_spans
    ]


def span_entry(span: SpanProto) -> SpanEntry:
    return (
        span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        span.name,
        span.kind,
        min(span.start_time_unix_nano, INT64_MAX),
        min(span.end_time_unix_nano, INT64_MAX),
        span.status.code,
        span.SerializeToString(),
        indexing.span_search_terms(span),
    )


def resource_key(resource_spans: ResourceSpans) -> bytes:
    # Deterministic serialisation so that the same resource always interns to the same row.
    return ResourceSpans(
        resource=resource_spans.resource, schema_url=resource_spans.schema_url
    ).SerializeToString(deterministic=True)


def scope_key(scope_spans: ScopeSpans) -> bytes:
    return ScopeSpans(scope=scope_spans.scope, schema_url=scope_spans.schema_url).SerializeToString(
        deterministic=True
    )


def service_name(resource_spans: ResourceSpans) -> str:
    """`service.name` of the resource if it is a string, else "" (memory.go getServiceNameFromResource)."""
    return _string_attribute(resource_spans.resource.attributes, "service.name")


def _string_attribute(attributes: Iterable[KeyValue], key: str) -> str:
    for attribute in attributes:
        if attribute.key == key and attribute.value.WhichOneof("value") == "string_value":
            return attribute.value.string_value
    return ""
