"""What the store indexes besides the span columns: attribute values, for search by `key=value`.

Jaeger's tag search (`query.attributes` in API v3, "Tags" in its UI) matches a span that carries the
key with that value among its own attributes, its process (resource) attributes or the fields of one of
its logs (events). Values are compared as text: `200` finds an integer 200, `true` a boolean true. So each
span's attribute and event attribute values are stored once more as (key, text) rows that point at the
span's row, and each resource's attributes as (key, text) rows that point at the resource.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

# WITHOUT ROWID with the search key first: one b-tree per table that is both the data and the index.
SCHEMA = """
CREATE TABLE IF NOT EXISTS span_attributes (
    key TEXT NOT NULL, value TEXT NOT NULL, span_rowid INTEGER NOT NULL,
    PRIMARY KEY (key, value, span_rowid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS resource_attributes (
    key TEXT NOT NULL, value TEXT NOT NULL, resource_id INTEGER NOT NULL,
    PRIMARY KEY (key, value, resource_id)
) WITHOUT ROWID;
"""
INSERT_SPAN_ATTRIBUTE = "INSERT OR IGNORE INTO span_attributes (key, value, span_rowid) VALUES (?, ?, ?)"
INSERT_RESOURCE_ATTRIBUTE = (
    "INSERT OR IGNORE INTO resource_attributes (key, value, resource_id) VALUES (?, ?, ?)"
)


def attribute_text(value: AnyValue) -> str | None:
    """An attribute value as the text a search compares it with (None: not searchable, e.g. bytes)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "array_value":
        items = [attribute_text(item) for item in value.array_value.values]
        return json.dumps(items, separators=(",", ":"))
    return None


def searchable(attributes: Iterable[KeyValue]) -> Iterator[tuple[str, str]]:
    for attribute in attributes:
        text = attribute_text(attribute.value)
        if text is not None:
            yield attribute.key, text


def span_search_terms(span: SpanProto) -> set[tuple[str, str]]:
    """(key, text) of the span's attributes and of its events' attributes."""
    terms = set(searchable(span.attributes))
    for event in span.events:
        terms.update(searchable(event.attributes))
    return terms
