"""What the store indexes besides the span columns: attribute values, for search by `key=value`.

Jaeger's attribute search (`query.attributes` in API v3, "Tags" in its UI) matches a span that carries the
key with that value among its own attributes, its resource's, its scope's, or those of one of its events or
links (internal/storage/v2/memory/tenant.go findKeyValInTrace, Jaeger v2.20.0). Values compare as text, the
text pdata's `AsString` gives (attribute_text.py): `200` finds an integer 200, `true` a boolean true. So each
span's, event's and link's attribute values are stored once more as (key, text) rows that point at the
span's row, and each resource's attributes as (key, text) rows that point at the resource. Scopes are few:
span_filter.py matches them in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store.attribute_text import as_string

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
# A span's rows go when the span goes (retention) or is replaced (a re-sent span): found by their key.
DELETE_SPAN_ATTRIBUTE = "DELETE FROM span_attributes WHERE key = ? AND value = ? AND span_rowid = ?"
INSERT_RESOURCE_ATTRIBUTE = (
    "INSERT OR IGNORE INTO resource_attributes (key, value, resource_id) VALUES (?, ?, ?)"
)


def searchable(attributes: Iterable[KeyValue]) -> Iterator[tuple[str, str]]:
    for attribute in attributes:
        yield attribute.key, as_string(attribute.value)


def span_search_terms(span: SpanProto) -> set[tuple[str, str]]:
    """(key, text) of the span's attributes and of its events' and links' attributes."""
    terms = set(searchable(span.attributes))
    for event in span.events:
        terms.update(searchable(event.attributes))
    for link in span.links:
        terms.update(searchable(link.attributes))
    return terms


def span_rows(rowid: int, body: bytes) -> list[tuple[str, str, int]]:
    """The span_attributes rows of the stored span `body` at `rowid`."""
    return [(key, value, rowid) for key, value in span_search_terms(SpanProto.FromString(body))]
