"""Decoding OTLP/JSON trace exports fast, for the trace store.

Why: `json_format.ParseDict` (pure Python, reflection per field) took about 220 µs per span, so a stack
whose services send OTLP/JSON (tracehop's default exporter) spent more CPU in its trace store than the
services saved by not encoding protobuf. This decoder builds the same `ExportTraceServiceRequest` for the
canonical OTLP/JSON that OpenTelemetry exporters send (camelCase keys, hex ids, integer enums, 64-bit
integers as strings or numbers): about a tenth of that. It checks each value's JSON type in Python and
hands protobuf the whole request as nested constructor arguments (one call into its C code).

It never decides what a valid request is: anything it does not recognise exactly (an unknown key, an
enum given by name, snake_case keys, a malformed id, ...) raises `NotCanonical`, and the store then
decodes the body with `json_format` as before, which accepts or rejects it with its own message.
tests/unit/test_otlp_json_differential.py checks that both decoders give the same message, and
tests/unit/test_otlp_json_fast_documents.py that the store stores the same rows either way.
"""

from __future__ import annotations

import base64
import math
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store.attribute_text import as_string
from tracehop.traces.store.ingest_batch import (
    INT64_MAX,
    ResourceGroup,
    ScopeGroup,
    SpanEntry,
    resource_key,
    scope_key,
    service_name,
)


class NotCanonical(ValueError):
    """The document is not in the form this decoder handles: decode it with json_format instead."""


_REQUEST = {"resourceSpans"}
_RESOURCE_SPANS = {"resource", "scopeSpans", "schemaUrl"}
_RESOURCE = {"attributes", "droppedAttributesCount"}
_SCOPE_SPANS = {"scope", "spans", "schemaUrl"}
_SCOPE = {"name", "version", "attributes", "droppedAttributesCount"}
_EVENT = {"timeUnixNano", "name", "attributes", "droppedAttributesCount"}
_LINK = {"traceId", "spanId", "traceState", "attributes", "droppedAttributesCount", "flags"}
_STATUS = {"code", "message"}
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_INT64 = 2**63
_UINT32 = 2**32


def decode(document: Any) -> ExportTraceServiceRequest:
    """The request for a parsed OTLP/JSON document; NotCanonical when json_format must decide."""
    try:
        _keys(document, _REQUEST)
        # The whole request as constructor arguments (snake_case field names, nested dicts and lists),
        # turned into messages by one call into protobuf's C code: setting each field through the
        # generated message API cost about twice as much CPU.
        return ExportTraceServiceRequest(
            resource_spans=[_resource_spans(item) for item in _list(document.get("resourceSpans"))]
        )
    except NotCanonical:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise NotCanonical(str(error)) from None


def decode_batch(document: Any) -> list[ResourceGroup]:
    """What the store stores of a parsed OTLP/JSON document (ingest_batch.py), built from the JSON: no
    request message, each span's Span built and serialised alone, its columns and attribute index terms
    taken from the JSON values; NotCanonical when json_format must decide."""
    try:
        _keys(document, _REQUEST)
        return [_resource_group(item) for item in _list(document.get("resourceSpans"))]
    except NotCanonical:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise NotCanonical(str(error)) from None


def _resource_group(document: Any) -> ResourceGroup:
    head = _resource_head(document)
    # Always with a resource, as ingest_batch.resource_key makes it (an absent one becomes empty).
    resource_spans = ResourceSpans(resource=head.get("resource", {}), schema_url=head["schema_url"])
    return ResourceGroup(
        resource_key(resource_spans),
        resource_spans,
        service_name(resource_spans),
        [_scope_group(item) for item in _list(document.get("scopeSpans"))],
    )


def _scope_group(document: Any) -> ScopeGroup:
    head = _scope_head(document)
    key = scope_key(ScopeSpans(scope=head.get("scope", {}), schema_url=head["schema_url"]))
    return ScopeGroup(key, [_span_entry(span) for span in _list(document.get("spans"))])


def _span_entry(span: Any) -> SpanEntry:
    terms: set[tuple[str, str]] = set()
    message = _span(span, terms)
    trace_id, span_id = message["trace_id"], message["span_id"]
    if not any(trace_id) or not any(span_id):
        raise NotCanonical("an all-zero id")  # rejected by the general path, in its words
    status = message.get("status")
    return (
        trace_id.hex(),
        span_id.hex(),
        message.get("parent_span_id", b"").hex(),
        message.get("name", ""),
        message.get("kind", 0),
        min(message.get("start_time_unix_nano", 0), INT64_MAX),
        min(message.get("end_time_unix_nano", 0), INT64_MAX),
        status["code"] if status else 0,
        SpanProto(**message).SerializeToString(),
        terms,
    )


def _resource_spans(document: Any) -> dict[str, Any]:
    message = _resource_head(document)
    message["scope_spans"] = [_scope_spans(item) for item in _list(document.get("scopeSpans"))]
    return message


def _resource_head(document: Any) -> dict[str, Any]:
    """The resourceSpans entry but its scopeSpans, as constructor arguments."""
    _keys(document, _RESOURCE_SPANS)
    message: dict[str, Any] = {"schema_url": _str(document.get("schemaUrl", ""))}
    if "resource" in document:
        resource = document["resource"]
        _keys(resource, _RESOURCE)
        message["resource"] = {
            "attributes": _attributes(resource.get("attributes")),
            "dropped_attributes_count": _uint32(resource.get("droppedAttributesCount", 0)),
        }
    return message


def _scope_spans(document: Any) -> dict[str, Any]:
    message = _scope_head(document)
    message["spans"] = [_span(span) for span in _list(document.get("spans"))]
    return message


def _scope_head(document: Any) -> dict[str, Any]:
    """The scopeSpans entry but its spans, as constructor arguments."""
    _keys(document, _SCOPE_SPANS)
    message: dict[str, Any] = {"schema_url": _str(document.get("schemaUrl", ""))}
    if "scope" in document:
        scope = document["scope"]
        _keys(scope, _SCOPE)
        message["scope"] = {
            "name": _str(scope.get("name", "")),
            "version": _str(scope.get("version", "")),
            "attributes": _attributes(scope.get("attributes")),
            "dropped_attributes_count": _uint32(scope.get("droppedAttributesCount", 0)),
        }
    return message


def _span(span: Any, terms: set[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The span as constructor arguments; with `terms`, its attribute index terms go there too."""
    if type(span) is not dict or "traceId" not in span or "spanId" not in span:
        raise NotCanonical("span")
    # Only the fields present are converted (a span names about ten of its sixteen): each by its
    # converter, an unknown key being NotCanonical.
    message = {}
    for name, value in span.items():
        if name == "attributes":
            message["attributes"] = _attributes(value, terms)
        elif name == "events":
            message["events"] = [_event(event, terms) for event in _list(value)]
        elif name == "links":
            message["links"] = [_link(link, terms) for link in _list(value)]
        else:
            field = _SPAN_FIELDS.get(name)
            if field is None:
                raise NotCanonical(f"span field {name}")
            message[field[0]] = field[1](value)
    return message


def _parent_id(value: Any) -> bytes:
    return _id(value, 8) if value else _str(value).encode()


def _status(status: Any) -> dict[str, Any]:
    _keys(status, _STATUS)
    return {"code": _int_enum(status.get("code", 0)), "message": _str(status.get("message", ""))}


def _event(event: Any, terms: set[tuple[str, str]] | None) -> dict[str, Any]:
    _keys(event, _EVENT)
    return {
        "time_unix_nano": _uint64(event.get("timeUnixNano", 0)),
        "name": _str(event.get("name", "")),
        "attributes": _attributes(event.get("attributes"), terms),
        "dropped_attributes_count": _uint32(event.get("droppedAttributesCount", 0)),
    }


def _link(link: Any, terms: set[tuple[str, str]] | None) -> dict[str, Any]:
    _keys(link, _LINK)
    return {
        "trace_id": _id(link["traceId"], 16),
        "span_id": _id(link["spanId"], 8),
        "trace_state": _str(link.get("traceState", "")),
        "attributes": _attributes(link.get("attributes"), terms),
        "dropped_attributes_count": _uint32(link.get("droppedAttributesCount", 0)),
        "flags": _uint32(link.get("flags", 0)),
    }


# ---------------------------------------------------------------------------------- attribute values

_KEY_VALUE = {"key", "value"}


def _attributes(items: Any, terms: set[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Attributes as constructor arguments; with `terms`, each one's (key, text) (indexing.py) too."""
    decoded = []
    for item in _list(items):
        if type(item) is not dict or not item.keys() <= _KEY_VALUE:
            raise NotCanonical("attribute")
        key = _str(item.get("key", ""))
        value = item.get("value")
        # Most attribute values are strings: decoded here without a call (a third of the decoder's CPU
        # went to the calls per value).
        if type(value) is dict and len(value) == 1 and type(value.get("stringValue")) is str:
            text = value["stringValue"]
            decoded.append({"key": key, "value": {"string_value": text}})
        elif "value" in item:
            any_value = _value(value)
            decoded.append({"key": key, "value": any_value})
            text = _text(any_value) if terms is not None else ""
        else:
            decoded.append({"key": key})
            text = ""  # as_string of an unset value
        if terms is not None:
            terms.add((key, text))
    return decoded


def _text(any_value: dict[str, Any]) -> str:
    """attribute_text.as_string of the AnyValue these constructor arguments make."""
    if "int_value" in any_value:
        return str(any_value["int_value"])
    if "bool_value" in any_value:
        return "true" if any_value["bool_value"] else "false"
    return as_string(AnyValue(**any_value))


def _value(value: Any) -> dict[str, Any]:
    if type(value) is not dict or len(value) > 1:
        raise NotCanonical("AnyValue")
    for kind, inner in value.items():
        if kind == "stringValue":
            return {"string_value": _str(inner)}
        if kind == "intValue":
            return {"int_value": _int64(inner)}
        if kind == "boolValue":
            if type(inner) is not bool:
                raise NotCanonical("boolValue")
            return {"bool_value": inner}
        if kind == "doubleValue":
            return {"double_value": _double(inner)}
        if kind == "bytesValue":
            return {"bytes_value": base64.b64decode(_str(inner), validate=True)}
        if kind == "arrayValue":
            _keys(inner, {"values"})
            return {"array_value": {"values": [_value(item) for item in _list(inner.get("values"))]}}
        if kind == "kvlistValue":
            _keys(inner, {"values"})
            return {"kvlist_value": {"values": _attributes(inner.get("values"))}}
        raise NotCanonical(f"AnyValue {kind}")
    return {}  # an empty AnyValue: present, with no value set


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


# Span fields by JSON name: the proto field name and the converter of the JSON value (attributes, events
# and links, which carry index terms, are converted in _span itself).
_SPAN_FIELDS: dict[str, tuple[str, Any]] = {
    "traceId": ("trace_id", lambda value: _id(value, 16)),
    "spanId": ("span_id", lambda value: _id(value, 8)),
    "traceState": ("trace_state", _str),
    "parentSpanId": ("parent_span_id", _parent_id),
    "flags": ("flags", _uint32),
    "name": ("name", _str),
    "kind": ("kind", _int_enum),
    "startTimeUnixNano": ("start_time_unix_nano", _uint64),
    "endTimeUnixNano": ("end_time_unix_nano", _uint64),
    "droppedAttributesCount": ("dropped_attributes_count", _uint32),
    "droppedEventsCount": ("dropped_events_count", _uint32),
    "droppedLinksCount": ("dropped_links_count", _uint32),
    "status": ("status", _status),
}
SPAN_FIELD_NAMES = (*_SPAN_FIELDS, "attributes", "events", "links")
