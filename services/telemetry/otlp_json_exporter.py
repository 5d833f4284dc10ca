"""A fast OTLP/HTTP span exporter that sends OTLP/JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`).

Why it exists: the SDK's OTLP/HTTP exporter builds one protobuf message object per span, attribute and
value in pure Python before serialising them: about 50 µs per Flask server span (13 attributes, one
event), the largest single share of what tracing cost in `make bench`'s profile. Building the same request
as plain dicts and lists and serialising it with orjson (native code) takes 16 µs (docs/performance.md).

What stays the SDK's: this class IS the SDK's `OTLPSpanExporter` with only the encoding replaced, so the
endpoint (`OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`), timeout, headers, compression (gzip/deflate), TLS
settings, retries with backoff, the size limit and the SDK's exporter metrics are the SDK's own code.

What it encodes: every field of the OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-
protobuf-encoding): hex trace/span ids, 64-bit integers as decimal strings, enums as integers, bytes as
base64, NaN/Infinity as the strings proto3 JSON uses, attribute values of every type (including arrays and
key/value lists), events, links, status, trace state, flags, dropped counts, resource and scope with their
attributes and schema URLs. tests/unit/test_otlp_json_differential.py proves it equal to the SDK's
protobuf encoding for generated spans; tests/unit/test_otlp_json_exporter.py checks the HTTP behaviour.

Two fields where it follows the OTLP specification rather than the SDK's encoder (which omits them, see
opentelemetry-python issue #4666): the low 8 bits of `flags` carry the W3C trace flags (sampled) of the
span and of each link, and each link carries its `traceState`. The Java and Go SDKs send both.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import SpanContext

_logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"

# SpanFlags of trace.proto: the parent's (or linked context's) remoteness is known / is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------------------------- values


def _int_value(value: int) -> dict[str, str]:
    if not _INT64_MIN <= value <= _INT64_MAX:
        # The protobuf encoder refuses these too; the attribute is dropped (see encode_attributes).
        raise ValueError(f"integer {value} does not fit OTLP's int64")
    return {"intValue": str(int(value))}  # int(): IntEnum members print as their name in some versions


def _double_value(value: float) -> dict[str, Any]:
    if math.isfinite(value):
        return {"doubleValue": value}
    # proto3 JSON spells these as strings; orjson would write null.
    return {"doubleValue": "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")}


def encode_value(value: Any) -> dict[str, Any]:
    """One AnyValue, checking types in the order the SDK's encoder does (bool before int)."""
    kind = type(value)
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        return _int_value(value)
    if kind is float:
        return _double_value(value)
    return _encode_other_value(value)


def _encode_other_value(value: Any) -> dict[str, Any]:
    # Subclasses and containers: the same isinstance chain as opentelemetry's _encode_value.
    if value is None:
        return {}
    if isinstance(value, bool):
        return {"boolValue": bool(value)}
    if isinstance(value, str):
        return {"stringValue": str(value)}
    if isinstance(value, int):
        return _int_value(value)
    if isinstance(value, float):
        return _double_value(float(value))
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [encode_value(item) for item in value]}}
    if isinstance(value, Mapping):
        return {
            "kvlistValue": {
                "values": [{"key": str(key), "value": encode_value(item)} for key, item in value.items()]
            }
        }
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def encode_attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """KeyValue list; an attribute whose value cannot be encoded is left out and logged, as the SDK does."""
    if not attributes:
        return []
    # The SDK's BoundedAttributes iterates its items through MutableMapping's generic (slow) view; its
    # plain dict underneath gives the same items in the same order.
    items = getattr(attributes, "_dict", attributes).items()
    try:
        return [{"key": key, "value": encode_value(value)} for key, value in items]
    except Exception:  # rare: redo one by one so only the bad attribute is lost
        pass
    encoded = []
    for key, value in items:
        try:
            encoded.append({"key": key, "value": encode_value(value)})
        except Exception as error:  # one bad attribute must not lose the batch
            _logger.exception("Failed to encode key %s: %s", key, error)
    return encoded


# ---------------------------------------------------------------------------------------------- spans


def _flags(context: SpanContext, parent: SpanContext | None) -> int:
    flags = (int(context.trace_flags) & 0xFF) | _HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _IS_REMOTE
    return flags


def _trace_state(context: SpanContext) -> str:
    state = context.trace_state
    return ",".join(f"{key}={value}" for key, value in state.items()) if state else ""


def _with_optional(document: dict[str, Any], attributes: Any, dropped: int) -> dict[str, Any]:
    if attributes:
        document["attributes"] = encode_attributes(attributes)
    if dropped:
        document["droppedAttributesCount"] = dropped
    return document


def encode_span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    document: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # SpanKind INTERNAL=0 -> SPAN_KIND_INTERNAL=1, ...
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "flags": _flags(context, parent),
    }
    if parent is not None:
        document["parentSpanId"] = f"{parent.span_id:016x}"
    trace_state = _trace_state(context)
    if trace_state:
        document["traceState"] = trace_state
    # ReadableSpan.attributes wraps the same mapping in a MappingProxyType, which hides BoundedAttributes.
    _with_optional(document, getattr(span, "_attributes", None) or span.attributes, span.dropped_attributes)
    events = span.events
    if events:
        document["events"] = [
            _with_optional(
                {"timeUnixNano": str(event.timestamp), "name": event.name},
                event.attributes,
                event.dropped_attributes,
            )
            for event in events
        ]
    if span.dropped_events:
        document["droppedEventsCount"] = span.dropped_events
    links = span.links
    if links:
        document["links"] = [_encode_link(link) for link in links]
    if span.dropped_links:
        document["droppedLinksCount"] = span.dropped_links
    status = span.status
    if status is not None:
        status_document: dict[str, Any] = {}
        if status.status_code.value:
            status_document["code"] = status.status_code.value
        if status.description:
            status_document["message"] = status.description
        document["status"] = status_document
    return document


def _encode_link(link: Any) -> dict[str, Any]:
    context = link.context
    document = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "flags": _flags(context, context),
    }
    trace_state = _trace_state(context)
    if trace_state:
        document["traceState"] = trace_state
    return _with_optional(document, link.attributes, link.dropped_attributes)


def _encode_scope(scope: Any) -> dict[str, Any]:
    if scope is None:
        return {}
    document: dict[str, Any] = {"name": scope.name}
    if scope.version:
        document["version"] = scope.version
    if scope.attributes:
        document["attributes"] = encode_attributes(scope.attributes)
    return document


def encode_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """The ExportTraceServiceRequest as an OTLP/JSON document: spans grouped by resource, then by scope,
    in order of first appearance, like the SDK's encoder."""
    # Grouping by object identity first: a process has one resource and a handful of scopes, and hashing
    # a Resource serialises all its attributes. Equal objects that are not identical still end up in one
    # group, as with the SDK's encoder, because each distinct object is looked up by value once.
    groups: dict[Any, dict[Any, list[dict[str, Any]]]] = {}
    by_identity: dict[tuple[int, int], list[dict[str, Any]]] = {}  # ids stay valid: `spans` holds them
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope or None
        identity = (id(resource), id(scope))
        target = by_identity.get(identity)
        if target is None:
            target = groups.setdefault(resource, {}).setdefault(scope, [])
            by_identity[identity] = target
        target.append(encode_span(span))
    resource_spans = []
    for resource, scopes in groups.items():
        resource_document: dict[str, Any] = {
            "resource": {"attributes": encode_attributes(resource.attributes)},
            "scopeSpans": [_scope_spans(scope, scope_spans) for scope, scope_spans in scopes.items()],
        }
        if resource.schema_url:
            resource_document["schemaUrl"] = resource.schema_url
        resource_spans.append(resource_document)
    return {"resourceSpans": resource_spans}


def _scope_spans(scope: Any, spans: list[dict[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {"scope": _encode_scope(scope), "spans": spans}
    if scope is not None and scope.schema_url:
        document["schemaUrl"] = scope.schema_url
    return document


def encode_spans_json(spans: Sequence[ReadableSpan]) -> bytes:
    """The OTLP/JSON body for `spans`."""
    return orjson.dumps(encode_request(spans))


# -------------------------------------------------------------------------------------------- exporter


class OTLPJsonSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, sending OTLP/JSON encoded by `encode_spans_json`.

    Takes the same arguments and reads the same environment variables as `OTLPSpanExporter`.
    """

    def __init__(self, *args: Any, headers: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        # Headers passed here override OTEL_EXPORTER_OTLP_*_HEADERS and the SDK's protobuf Content-Type.
        super().__init__(*args, headers={**(headers or {}), "Content-Type": JSON_CONTENT_TYPE}, **kwargs)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The SDK's export() step by step (same logging, size check and metrics), with our encoder.
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                body = encode_spans_json(spans)
            except Exception as error:  # the SDK also turns any encoding error into FAILURE
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(body, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(body),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(body)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
