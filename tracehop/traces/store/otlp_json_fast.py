"""Decoding OTLP/JSON trace exports fast, for the trace store.

Why: `json_format.ParseDict` (pure Python, reflection per field) took about 220 µs per span, so a stack
whose services send OTLP/JSON (tracehop's default exporter) spent more CPU in its trace store than the
services saved by not encoding protobuf. This decoder builds the same `ExportTraceServiceRequest` with
the generated message API for the canonical OTLP/JSON that OpenTelemetry exporters send (camelCase keys,
hex ids, integer enums, 64-bit integers as strings or numbers): about a tenth of that.

It never decides what a valid request is: anything it does not recognise exactly (an unknown key, an
enum given by name, snake_case keys, a malformed id, ...) raises `NotCanonical`, and the store then
decodes the body with `json_format` as before, which accepts or rejects it with its own message.
tests/unit/test_otlp_json_differential.py checks that both decoders give the same message.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class NotCanonical(ValueError):
    """The document is not in the form this decoder handles: decode it with json_format instead."""


_REQUEST = {"resourceSpans"}
_RESOURCE_SPANS = {"resource", "scopeSpans", "schemaUrl"}
_RESOURCE = {"attributes", "droppedAttributesCount"}
_SCOPE_SPANS = {"scope", "spans", "schemaUrl"}
_SCOPE = {"name", "version", "attributes", "droppedAttributesCount"}
_SPAN = {
    "traceId",
    "spanId",
    "traceState",
    "parentSpanId",
    "flags",
    "name",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "attributes",
    "droppedAttributesCount",
    "events",
    "droppedEventsCount",
    "links",
    "droppedLinksCount",
    "status",
}
_EVENT = {"timeUnixNano", "name", "attributes", "droppedAttributesCount"}
_LINK = {"traceId", "spanId", "traceState", "attributes", "droppedAttributesCount", "flags"}
_STATUS = {"code", "message"}
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INT64 = 2**63
_UINT32 = 2**32


def decode(document: Any) -> ExportTraceServiceRequest:
    """The request for a parsed OTLP/JSON document; NotCanonical when json_format must decide."""
    try:
        request = ExportTraceServiceRequest()
        _keys(document, _REQUEST)
        for resource_spans in _list(document.get("resourceSpans")):
            _keys(resource_spans, _RESOURCE_SPANS)
            message = request.resource_spans.add()
            if "resource" in resource_spans:
                resource = resource_spans["resource"]
                _keys(resource, _RESOURCE)
                message.resource.SetInParent()
                _attributes(message.resource.attributes, resource.get("attributes"))
                message.resource.dropped_attributes_count = _uint32(resource.get("droppedAttributesCount", 0))
            message.schema_url = _str(resource_spans.get("schemaUrl", ""))
            for scope_spans in _list(resource_spans.get("scopeSpans")):
                _scope_spans(message.scope_spans.add(), scope_spans)
        return request
    except NotCanonical:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise NotCanonical(str(error)) from None


def _scope_spans(message: Any, document: Any) -> None:
    _keys(document, _SCOPE_SPANS)
    if "scope" in document:
        scope = document["scope"]
        _keys(scope, _SCOPE)
        message.scope.SetInParent()
        message.scope.name = _str(scope.get("name", ""))
        message.scope.version = _str(scope.get("version", ""))
        _attributes(message.scope.attributes, scope.get("attributes"))
        message.scope.dropped_attributes_count = _uint32(scope.get("droppedAttributesCount", 0))
    message.schema_url = _str(document.get("schemaUrl", ""))
    for span in _list(document.get("spans")):
        _span(message.spans.add(), span)


def _span(message: Any, span: Any) -> None:
    _keys(span, _SPAN)
    message.trace_id = _id(span["traceId"], 16)
    message.span_id = _id(span["spanId"], 8)
    message.trace_state = _str(span.get("traceState", ""))
    parent = span.get("parentSpanId", "")
    if parent:
        message.parent_span_id = _id(parent, 8)
    message.flags = _uint32(span.get("flags", 0))
    message.name = _str(span.get("name", ""))
    message.kind = _int_enum(span.get("kind", 0))
    message.start_time_unix_nano = _uint64(span.get("startTimeUnixNano", 0))
    message.end_time_unix_nano = _uint64(span.get("endTimeUnixNano", 0))
    _attributes(message.attributes, span.get("attributes"))
    message.dropped_attributes_count = _uint32(span.get("droppedAttributesCount", 0))
    for event in _list(span.get("events")):
        _keys(event, _EVENT)
        event_message = message.events.add()
        event_message.time_unix_nano = _uint64(event.get("timeUnixNano", 0))
        event_message.name = _str(event.get("name", ""))
        _attributes(event_message.attributes, event.get("attributes"))
        event_message.dropped_attributes_count = _uint32(event.get("droppedAttributesCount", 0))
    message.dropped_events_count = _uint32(span.get("droppedEventsCount", 0))
    for link in _list(span.get("links")):
        _keys(link, _LINK)
        link_message = message.links.add()
        link_message.trace_id = _id(link["traceId"], 16)
        link_message.span_id = _id(link["spanId"], 8)
        link_message.trace_state = _str(link.get("traceState", ""))
        _attributes(link_message.attributes, link.get("attributes"))
        link_message.dropped_attributes_count = _uint32(link.get("droppedAttributesCount", 0))
        link_message.flags = _uint32(link.get("flags", 0))
    message.dropped_links_count = _uint32(span.get("droppedLinksCount", 0))
    if "status" in span:
        status = span["status"]
        _keys(status, _STATUS)
        message.status.SetInParent()
        message.status.code = _int_enum(status.get("code", 0))
        message.status.message = _str(status.get("message", ""))


# ---------------------------------------------------------------------------------- attribute values


def _attributes(repeated: Any, items: Any) -> None:
    for item in _list(items):
        if type(item) is not dict or not item.keys() <= {"key", "value"}:
            raise NotCanonical("attribute")
        key_value = repeated.add()
        key_value.key = _str(item.get("key", ""))
        if "value" in item:
            key_value.value.SetInParent()
            _value(key_value.value, item["value"])


def _value(message: Any, value: Any) -> None:
    if type(value) is not dict or len(value) > 1:
        raise NotCanonical("AnyValue")
    for kind, inner in value.items():
        if kind == "stringValue":
            message.string_value = _str(inner)
        elif kind == "intValue":
            message.int_value = _int64(inner)
        elif kind == "boolValue":
            if type(inner) is not bool:
                raise NotCanonical("boolValue")
            message.bool_value = inner
        elif kind == "doubleValue":
            message.double_value = _double(inner)
        elif kind == "bytesValue":
            message.bytes_value = base64.b64decode(_str(inner), validate=True)
        elif kind == "arrayValue":
            _keys(inner, {"values"})
            message.array_value.SetInParent()
            for item in _list(inner.get("values")):
                _value(message.array_value.values.add(), item)
        elif kind == "kvlistValue":
            _keys(inner, {"values"})
            message.kvlist_value.SetInParent()
            _attributes(message.kvlist_value.values, inner.get("values"))
        else:
            raise NotCanonical(f"AnyValue {kind}")


# --------------------------------------------------------------------------------------------- scalars


def _keys(document: Any, allowed: set[str]) -> None:
    if type(document) is not dict or not document.keys() <= allowed:
        raise NotCanonical("unexpected keys")


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if type(value) is not list:
        raise NotCanonical("expected a list")
    return value


def _str(value: Any) -> str:
    if type(value) is not str:
        raise NotCanonical("expected a string")
    return value


def _integer(value: Any) -> int:
    if type(value) is int:
        return value
    if type(value) is str and value.lstrip("-").isascii() and value.lstrip("-").isdigit():
        return int(value)
    raise NotCanonical("expected an integer")


def _int64(value: Any) -> int:
    number = _integer(value)
    if not -_INT64 <= number < _INT64:
        raise NotCanonical("int64 out of range")
    return number


def _uint64(value: Any) -> int:
    number = _integer(value)
    if not 0 <= number < 2 * _INT64:
        raise NotCanonical("uint64 out of range")
    return number


def _uint32(value: Any) -> int:
    if type(value) is not int or not 0 <= value < _UINT32:
        raise NotCanonical("expected a uint32 number")
    return value


def _int_enum(value: Any) -> int:
    if type(value) is not int:  # enums by name: json_format knows their numbers
        raise NotCanonical("enum by name")
    return value


def _double(value: Any) -> float:
    if type(value) is float or type(value) is int:
        return float(value)
    if type(value) is str and value in _NON_FINITE:
        return _NON_FINITE[value]
    raise NotCanonical("expected a number")


def _id(value: Any, length: int) -> bytes:
    if type(value) is not str or len(value) != 2 * length or not value.isascii():
        raise NotCanonical("id")
    decoded = bytes.fromhex(value)
    if len(decoded) != length:  # fromhex skips spaces
        raise NotCanonical("id")
    return decoded
