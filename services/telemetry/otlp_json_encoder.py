"""OTLP/JSON for a batch of SDK spans, written directly as JSON text: `encode_spans_json(spans) -> bytes`.

Why text and not dicts for a JSON serialiser (it was orjson): building the request as nested dicts and
lists (two or three containers per attribute, a dozen per span) was most of the encoder's cost, and a
third of that was the garbage collector, which every such allocation brings closer to a collection (in a
service, a collection that may walk the whole heap). Strings are not tracked by the collector. Every
string of the request goes through the standard library's C JSON string escaper
(`json.encoder.encode_basestring`); numbers are written by `str`/`repr`, which give valid JSON for every
value written here (non-finite floats are written as proto3 JSON's strings). `make export-cost` measures
it (docs/performance.md).

What it encodes: every field of the OTLP/JSON encoding (https://opentelemetry.io/docs/specs/otlp/#json-
protobuf-encoding): hex trace/span ids, 64-bit integers as decimal strings, enums as integers, bytes as
base64, NaN/Infinity as the strings proto3 JSON uses, attribute values of every type (including arrays and
key/value lists), events, links, status, trace state, flags, dropped counts, resource and scope with their
attributes and schema URLs. tests/unit/test_otlp_json_differential.py proves it equal to the SDK's
protobuf encoding for generated spans and for spans recorded from the services.

Two fields where it follows the OTLP specification rather than the SDK's encoder (which omits them, see
opentelemetry-python issue #4666): the low 8 bits of `flags` carry the W3C trace flags (sampled) of the
span and of each link, and each link carries its `traceState`. The Java and Go SDKs send both.
"""

from __future__ import annotations

import base64
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from json.encoder import encode_basestring  # C: a str as a JSON string literal, quotes included
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan, Span
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.status import Status

_logger = logging.getLogger(__name__)

# SpanFlags of trace.proto: the parent's (or linked context's) remoteness is known / is remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --------------------------------------------------------------------------------------------- values


def _int_value(value: int) -> str:
    if not _INT64_MIN <= value <= _INT64_MAX:
        # The protobuf encoder refuses these too; the attribute is dropped (see attributes_json).
        raise ValueError(f"integer {value} does not fit OTLP's int64")
    return '{"intValue":"' + str(value) + '"}'


def _double_value(value: float) -> str:
    if math.isfinite(value):
        return '{"doubleValue":' + repr(value) + "}"  # repr: the shortest text that reads back the same
    # proto3 JSON spells these as strings.
    return (
        '{"doubleValue":"' + ("NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")) + '"}'
    )


def value_json(value: Any) -> str:
    """One AnyValue as JSON text, checking types in the order the SDK's encoder does (bool before int)."""
    kind = type(value)
    if kind is str:
        return '{"stringValue":' + encode_basestring(value) + "}"
    if kind is bool:
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if kind is int:
        return _int_value(value)
    if kind is float:
        return _double_value(value)
    return _other_value_json(value)


def _other_value_json(value: Any) -> str:
    # Subclasses and containers: the same isinstance chain as opentelemetry's _encode_value.
    if value is None:
        return "{}"
    if isinstance(value, bool):
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if isinstance(value, str):
        return '{"stringValue":' + encode_basestring(str(value)) + "}"
    if isinstance(value, int):
        return _int_value(int(value))  # int(): IntEnum members print as their name in some versions
    if isinstance(value, float):
        return _double_value(float(value))
    if isinstance(value, bytes):
        return '{"bytesValue":"' + base64.b64encode(value).decode("ascii") + '"}'
    if isinstance(value, Sequence):
        return '{"arrayValue":{"values":[' + ",".join([value_json(item) for item in value]) + "]}}"
    if isinstance(value, Mapping):
        pairs = [
            '{"key":' + encode_basestring(str(key)) + ',"value":' + value_json(item) + "}"
            for key, item in value.items()
        ]
        return '{"kvlistValue":{"values":[' + ",".join(pairs) + "]}}"
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def attributes_json(attributes: Mapping[str, Any]) -> str:
    """A KeyValue list as JSON text; an attribute whose value cannot be encoded is left out and logged,
    as the SDK's encoder does."""
    # The SDK's BoundedAttributes iterates its items through MutableMapping's generic (slow) view; its
    # plain dict underneath gives the same items in the same order.
    items = getattr(attributes, "_dict", attributes).items()
    encoded = []
    texts = _attribute_texts
    for key, value in items:
        kind = type(value)
        if kind is str or kind is int:  # exact types: True == 1 and 1.0 == 1 must not share a text
            text = texts.get((key, value))
            if text is not None:
                encoded.append(text)
                continue
        try:
            text = '{"key":' + encode_basestring(key) + ',"value":' + value_json(value) + "}"
        except Exception as error:  # one bad attribute must not lose the batch
            _logger.exception("Failed to encode key %s: %s", key, error)
            continue
        if kind is int or (kind is str and len(value) <= LONGEST_VALUE_KEPT):
            if len(texts) >= ATTRIBUTE_TEXTS_KEPT:
                texts.clear()
            texts[key, value] = text
        encoded.append(text)
    return "[" + ",".join(encoded) + "]"


# The text of each (key, value) attribute seen lately: most attributes repeat from span to span (method,
# route, scheme, server address, status code, database system...); ids and paths do not, hence a bound.
# Only str and int values (exact types), so no two values that compare equal share an entry, and no long
# strings (a query, a stack trace), so the entries stay small: at most about 2 MB.
ATTRIBUTE_TEXTS_KEPT = 4096
LONGEST_VALUE_KEPT = 256
_attribute_texts: dict[tuple[str, str | int], str] = {}


def _with_optional(head: str, attributes: Any, dropped: int) -> str:
    """`head` (an object's fields, without braces) with its attributes and dropped count, braced."""
    if attributes:
        head += ',"attributes":' + attributes_json(attributes)
    if dropped:
        head += ',"droppedAttributesCount":' + str(dropped)
    return "{" + head + "}"


# ---------------------------------------------------------------------------------------------- spans


def _flags(context: SpanContext, parent: SpanContext | None) -> int:
    flags = (int(context.trace_flags) & 0xFF) | _HAS_IS_REMOTE
    if parent is not None and parent.is_remote:
        flags |= _IS_REMOTE
    return flags


def _trace_state(context: SpanContext) -> str:
    state = context.trace_state
    return ",".join(f"{key}={value}" for key, value in state.items()) if state else ""


def span_json(span: ReadableSpan) -> str:
    if _keeps_readable_span_fields(type(span)):
        # The SDK's own span: its fields, without the properties' copies (`events` and `links` copy
        # their lists under a lock, `attributes` wraps them in a proxy). An ended span does not change.
        attributes, events, links = span._attributes, span._events, span._links
        return _span_text(
            span._context,
            span._parent,
            span._name,
            span._kind,
            span._start_time,
            span._end_time,
            attributes,
            attributes.dropped if type(attributes) is BoundedAttributes else 0,
            events._dq if type(events) is BoundedList else events,
            events.dropped if type(events) is BoundedList else 0,
            links._dq if type(links) is BoundedList else links,
            links.dropped if type(links) is BoundedList else 0,
            span._status,
        )
    return _span_text(
        span.get_span_context(),
        span.parent,
        span.name,
        span.kind,
        span.start_time,
        span.end_time,
        span.attributes,
        span.dropped_attributes,
        span.events,
        span.dropped_events,
        span.links,
        span.dropped_links,
        span.status,
    )


# Every property of ReadableSpan that span_json reads; a class that overrides none of them (the SDK's
# Span overrides get_span_context with the same answer) keeps its data in ReadableSpan's fields.
_SPAN_PROPERTIES = (
    "name", "context", "parent", "kind", "start_time", "end_time", "attributes", "events", "links",
    "status", "resource", "instrumentation_scope", "dropped_attributes", "dropped_events", "dropped_links",
)  # fmt: skip
_classes_with_readable_span_fields: dict[type, bool] = {}


def _keeps_readable_span_fields(cls: type) -> bool:
    known = _classes_with_readable_span_fields.get(cls)
    if known is None:
        known = issubclass(cls, ReadableSpan) and all(
            getattr(cls, name) is getattr(ReadableSpan, name) for name in _SPAN_PROPERTIES
        )
        known = known and cls.get_span_context in (ReadableSpan.get_span_context, Span.get_span_context)
        _classes_with_readable_span_fields[cls] = known
    return known


def _span_text(
    context: SpanContext,
    parent: SpanContext | None,
    name: str,
    kind: SpanKind,
    start_time: int | None,
    end_time: int | None,
    attributes: Any,
    dropped_attributes: int,
    events: Iterable[Any],
    dropped_events: int,
    links: Iterable[Any],
    dropped_links: int,
    status: Status | None,
) -> str:
    head = (
        # Ids as the SDK's encoder takes them (to_bytes: the same OverflowError for an impossible id);
        # bytes.hex is faster than formatting the int.
        f'"traceId":"{context.trace_id.to_bytes(16, "big").hex()}"'
        f',"spanId":"{context.span_id.to_bytes(8, "big").hex()}"'
        f',"name":{encode_basestring(name)},"kind":{kind._value_ + 1}'  # INTERNAL=0 -> 1, ...
        f',"startTimeUnixNano":"{start_time or 0}","endTimeUnixNano":"{end_time or 0}"'
        f',"flags":{_flags(context, parent)}'
    )
    if parent is not None:
        head += f',"parentSpanId":"{parent.span_id.to_bytes(8, "big").hex()}"'
    trace_state = _trace_state(context)
    if trace_state:
        head += ',"traceState":' + encode_basestring(trace_state)
    if attributes:
        head += ',"attributes":' + attributes_json(attributes)
    if dropped_attributes:
        head += ',"droppedAttributesCount":' + str(dropped_attributes)
    if events:
        head += ',"events":[' + ",".join([_event_json(event) for event in events]) + "]"
    if dropped_events:
        head += ',"droppedEventsCount":' + str(dropped_events)
    if links:
        head += ',"links":[' + ",".join([_link_json(link) for link in links]) + "]"
    if dropped_links:
        head += ',"droppedLinksCount":' + str(dropped_links)
    if status is not None:
        code, description = status.status_code._value_, status.description
        if code and description:
            head += f',"status":{{"code":{code},"message":{encode_basestring(description)}}}'
        elif code:
            head += f',"status":{{"code":{code}}}'
        elif description:
            head += f',"status":{{"message":{encode_basestring(description)}}}'
        else:
            head += ',"status":{}'
    return "{" + head + "}"


def _event_json(event: Any) -> str:
    head = f'"timeUnixNano":"{event.timestamp}","name":{encode_basestring(event.name)}'
    return _with_optional(head, event.attributes, event.dropped_attributes)


def _link_json(link: Any) -> str:
    context = link.context
    head = (
        f'"traceId":"{context.trace_id.to_bytes(16, "big").hex()}"'
        f',"spanId":"{context.span_id.to_bytes(8, "big").hex()}"'
        f',"flags":{_flags(context, context)}'
    )
    trace_state = _trace_state(context)
    if trace_state:
        head += ',"traceState":' + encode_basestring(trace_state)
    return _with_optional(head, link.attributes, link.dropped_attributes)


# ----------------------------------------------------------------------------------- resource and scope


def _resource_json(resource: Any) -> str:
    """The beginning of a ResourceSpans object, up to its scopeSpans."""
    text = '{"resource":{"attributes":' + attributes_json(resource.attributes) + "}"
    if resource.schema_url:
        text += ',"schemaUrl":' + encode_basestring(resource.schema_url)
    return text


def _scope_json(scope: Any) -> str:
    """The beginning of a ScopeSpans object, up to its spans."""
    if scope is None:
        return '{"scope":{}'
    head = '"name":' + encode_basestring(scope.name)
    if scope.version:
        head += ',"version":' + encode_basestring(scope.version)
    if scope.attributes:
        head += ',"attributes":' + attributes_json(scope.attributes)
    text = '{"scope":{' + head + "}"
    if scope.schema_url:
        text += ',"schemaUrl":' + encode_basestring(scope.schema_url)
    return text


def encode_spans_json(
    spans: Sequence[ReadableSpan], pause: Callable[[], object] | None = None, pause_every: int = 32
) -> bytes:
    """The ExportTraceServiceRequest as an OTLP/JSON body: spans grouped by resource, then by scope, in
    order of first appearance, like the SDK's encoder.

    `pause`, when given, is called after every `pause_every` spans: the exporter lets the request
    threads (or greenlets) run there, instead of holding the interpreter for a whole batch.
    """
    # Grouping by object identity first: a process has one resource and a handful of scopes, and hashing
    # a Resource serialises all its attributes. Equal objects that are not identical still end up in one
    # group, as with the SDK's encoder, because each distinct object is looked up by value once.
    groups: dict[Any, dict[Any, list[str]]] = {}
    by_identity: dict[tuple[int, int], list[str]] = {}  # ids stay valid: `spans` holds them
    for index, span in enumerate(spans, 1):
        if pause is not None and not index % pause_every:
            pause()
        if _keeps_readable_span_fields(type(span)):
            resource, scope = span._resource, span._instrumentation_scope or None
        else:
            resource, scope = span.resource, span.instrumentation_scope or None
        identity = (id(resource), id(scope))
        target = by_identity.get(identity)
        if target is None:
            target = groups.setdefault(resource, {}).setdefault(scope, [])
            by_identity[identity] = target
        target.append(span_json(span))
    # One join over every piece, then one encode: each concatenation of the spans' text would copy the
    # whole body again (hundreds of kB, a fresh allocation and its page faults each time).
    parts = ['{"resourceSpans":[']
    for resource_index, (resource, scopes) in enumerate(groups.items()):
        parts.append(("," if resource_index else "") + _resource_json(resource) + ',"scopeSpans":[')
        for scope_index, (scope, texts) in enumerate(scopes.items()):
            parts.append(("," if scope_index else "") + _scope_json(scope) + ',"spans":[')
            parts.append(",".join(texts))
            parts.append("]}")
        parts.append("]}")
    parts.append("]}")
    return "".join(parts).encode()
