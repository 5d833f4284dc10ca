"""SQLite storage of spans: each span's serialized protobuf plus a few indexed columns.

The resource and the instrumentation scope are stored once each and referenced, so a query (api.py)
rebuilds the exact OTLP the store received.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store import indexing
from tracehop.traces.store.retention import Retention, prune
from tracehop.traces.store.service_map import ServiceMap, build_service_map

DEFAULT_NUM_TRACES = 20
UNKNOWN_SERVICE = "unknown_service"
INT64_MAX = 2**63 - 1  # SQLite integers are signed 64-bit; OTLP timestamps are fixed64
# Jaeger's /api/v3/operations reports kinds the way its v1 model names them.
OPERATION_KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


_SCHEMA = """
CREATE TABLE IF NOT EXISTS resources (id INTEGER PRIMARY KEY, body BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS scopes (id INTEGER PRIMARY KEY, body BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    resource_id INTEGER NOT NULL REFERENCES resources (id),
    scope_id INTEGER NOT NULL REFERENCES scopes (id),
    body BLOB NOT NULL,
    UNIQUE (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_service_start ON spans (service, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_ns);
"""
# Databases written before the attribute index (user_version 0) get it built once when opened.
_SCHEMA_VERSION = 1

_INSERT_SPAN = """
INSERT OR REPLACE INTO spans (trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns,
                              status_code, resource_id, scope_id, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True)
class TraceSearch:
    """Parameters of `GET /api/v3/traces`, times and durations in nanoseconds.

    One span of the trace must meet the span conditions together (service, operation, durations,
    attributes), as in Jaeger. `service` "" means any service (the viewer; the API requires one).
    `attributes`: (key, value) pairs the span must carry (its own, its resource's or an event's).
    `errors_only`: some span of the trace has status ERROR. `parent_service`: the span's parent is a span
    of that service (a service-map edge parent -> `service`).
    """

    service: str
    start_min_ns: int
    start_max_ns: int
    operation: str | None = None
    num_traces: int = DEFAULT_NUM_TRACES
    duration_min_ns: int | None = None
    duration_max_ns: int | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    errors_only: bool = False
    parent_service: str | None = None


@dataclass(frozen=True)
class StoredSpan:
    resource_id: int
    scope_id: int
    body: bytes


class SpanDatabase:
    """SQLite storage of spans.

    One connection guarded by a lock: the HTTP servers start a thread per request, so per-thread
    connections would pile up, and SQLite serialises writers anyway. WAL lets an outside reader (the
    sqlite3 shell) look without blocking exports.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._connection = sqlite3.connect(path, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")  # durable enough for a local dev store
        self._connection.execute("PRAGMA busy_timeout=5000")
        self._connection.executescript(_SCHEMA + indexing.SCHEMA)
        self._index_old_spans()

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def insert(self, request: ExportTraceServiceRequest) -> int:
        """Store every span of one export request in one transaction; return how many.

        INSERT OR REPLACE on (trace_id, span_id): an exporter retrying a batch it thinks failed must not
        duplicate spans.
        """
        count = 0
        with self._lock, self._connection:
            cursor = self._connection.cursor()
            terms: list[tuple[str, str, int]] = []
            for resource_spans in request.resource_spans:
                resource_id = self._intern_resource(resource_spans)
                service = service_name(resource_spans)
                for scope_spans in resource_spans.scope_spans:
                    scope_id = self._intern("scopes", _scope_key(scope_spans))
                    for span in scope_spans.spans:
                        # One execute per span (not executemany): the attribute rows need its rowid.
                        cursor.execute(_INSERT_SPAN, _span_row(span, service, resource_id, scope_id))
                        rowid = cursor.lastrowid
                        terms.extend((key, value, rowid) for key, value in indexing.span_search_terms(span))
                        count += 1
            cursor.executemany(indexing.INSERT_SPAN_ATTRIBUTE, terms)
        return count

    def _intern(self, table: str, body: bytes) -> int:
        self._connection.execute(f"INSERT OR IGNORE INTO {table} (body) VALUES (?)", (body,))
        (row_id,) = self._connection.execute(f"SELECT id FROM {table} WHERE body = ?", (body,)).fetchone()
        return row_id

    def _intern_resource(self, resource_spans: ResourceSpans) -> int:
        resource_id = self._intern("resources", _resource_key(resource_spans))
        terms = indexing.searchable(resource_spans.resource.attributes)
        self._connection.executemany(
            indexing.INSERT_RESOURCE_ATTRIBUTE, [(key, value, resource_id) for key, value in terms]
        )
        return resource_id

    def _index_old_spans(self) -> None:
        """Build the attribute index of spans stored by a version of the store that had none."""
        with self._lock, self._connection:
            (version,) = self._connection.execute("PRAGMA user_version").fetchone()
            if version >= _SCHEMA_VERSION:
                return
            for (body,) in self._connection.execute("SELECT body FROM resources").fetchall():
                self._intern_resource(ResourceSpans.FromString(body))
            rows = self._connection.execute("SELECT rowid, body FROM spans").fetchall()
            self._connection.executemany(
                indexing.INSERT_SPAN_ATTRIBUTE,
                [
                    (key, value, rowid)
                    for rowid, body in rows
                    for key, value in indexing.span_search_terms(SpanProto.FromString(body))
                ],
            )
            self._connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def trace(self, trace_id: str) -> list[StoredSpan]:
        return self.traces([trace_id]).get(trace_id, [])

    def traces(self, trace_ids: Sequence[str]) -> dict[str, list[StoredSpan]]:
        """Spans of each trace, keyed in the order of `trace_ids`, each sorted by start time."""
        found: dict[str, list[StoredSpan]] = {trace_id: [] for trace_id in trace_ids}
        if not trace_ids:
            return found
        marks = ",".join("?" * len(trace_ids))
        with self._lock:
            rows = self._connection.execute(
                f"SELECT trace_id, resource_id, scope_id, body FROM spans WHERE trace_id IN ({marks})"
                " ORDER BY start_ns, span_id",
                list(trace_ids),
            ).fetchall()
        for trace_id, resource_id, scope_id, body in rows:
            found[trace_id].append(StoredSpan(resource_id, scope_id, body))
        return {trace_id: spans for trace_id, spans in found.items() if spans}

    def find_trace_ids(self, search: TraceSearch) -> list[str]:
        """Traces with at least one span meeting every span condition, most recent first (as Jaeger does).

        The matching spans are read newest first and their trace ids collected until `num_traces` are
        found: the same order as grouping by trace and sorting by its latest matching span, but it reads a
        few hundred index entries instead of every span in the window. Each attribute drives an index
        lookup (key, value) -> span rows, so a search by attribute reads the matching spans only.
        """
        sql = "SELECT s.trace_id FROM spans AS s WHERE s.start_ns BETWEEN ? AND ?"
        args: list[Any] = [search.start_min_ns, search.start_max_ns]
        if search.service:
            sql += " AND s.service = ?"
            args.append(search.service)
        if search.operation:
            sql += " AND s.name = ?"
            args.append(search.operation)
        if search.duration_min_ns is not None:
            sql += " AND s.end_ns - s.start_ns >= ?"
            args.append(search.duration_min_ns)
        if search.duration_max_ns is not None:
            sql += " AND s.end_ns - s.start_ns <= ?"
            args.append(search.duration_max_ns)
        for key, value in search.attributes:
            sql += (
                " AND (s.rowid IN (SELECT span_rowid FROM span_attributes WHERE key = ? AND value = ?)"
                " OR s.resource_id IN"
                " (SELECT resource_id FROM resource_attributes WHERE key = ? AND value = ?))"
            )
            args += [key, value, key, value]
        if search.parent_service:
            sql += (
                " AND EXISTS (SELECT 1 FROM spans AS p WHERE p.trace_id = s.trace_id"
                " AND p.span_id = s.parent_span_id AND p.service = ?)"
            )
            args.append(search.parent_service)
        if search.errors_only:
            sql += (
                " AND EXISTS (SELECT 1 FROM spans AS e WHERE e.trace_id = s.trace_id AND e.status_code = 2)"
            )
        sql += " ORDER BY s.start_ns DESC"
        found: dict[str, None] = {}
        with self._lock:
            cursor = self._connection.execute(sql, args)
            for (trace_id,) in cursor:
                found[trace_id] = None
                if len(found) >= search.num_traces:
                    break
            cursor.close()
        return list(found)

    def service_map(
        self, start_min_ns: int, start_max_ns: int, trace_ids: Sequence[str] | None = None
    ) -> ServiceMap:
        """Services and cross-service calls of the spans starting in the window (see service_map.py)."""
        with self._lock:
            return build_service_map(self._connection, start_min_ns, start_max_ns, trace_ids)

    def prune(self, retention: Retention, now_ns: int) -> int:
        """Delete whole traces beyond `retention` (by age, then by span count); return how many spans."""
        with self._lock, self._connection:
            return prune(self._connection, retention, now_ns)

    def services(self) -> list[str]:
        with self._lock:
            return [
                row[0] for row in self._connection.execute("SELECT DISTINCT service FROM spans ORDER BY 1")
            ]

    def operations(self, service: str, span_kind: str = "") -> list[tuple[str, str]]:
        """(name, kind) of the operations of `service`; kinds in Jaeger's lowercase words."""
        with self._lock:
            rows = self._connection.execute(
                "SELECT DISTINCT name, kind FROM spans WHERE service = ? ORDER BY name, kind", (service,)
            ).fetchall()
        operations = [(name, OPERATION_KINDS.get(kind, "internal")) for name, kind in rows]
        return [op for op in operations if not span_kind or op[1] == span_kind.lower()]

    def bodies(self, table: str, ids: Iterable[int]) -> dict[int, bytes]:
        """Serialized resources or scopes by id (`table` is "resources" or "scopes")."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        with self._lock:
            rows = self._connection.execute(f"SELECT id, body FROM {table} WHERE id IN ({marks})", wanted)
            return dict(rows.fetchall())


def _resource_key(resource_spans: ResourceSpans) -> bytes:
    # Deterministic serialisation so that the same resource always interns to the same row.
    return ResourceSpans(
        resource=resource_spans.resource, schema_url=resource_spans.schema_url
    ).SerializeToString(deterministic=True)


def _scope_key(scope_spans: ScopeSpans) -> bytes:
    return ScopeSpans(scope=scope_spans.scope, schema_url=scope_spans.schema_url).SerializeToString(
        deterministic=True
    )


def service_name(resource_spans: ResourceSpans) -> str:
    """`service.name` of the resource, or `unknown_service` as the SDK specification says."""
    return _string_attribute(resource_spans.resource.attributes, "service.name") or UNKNOWN_SERVICE


def _string_attribute(attributes: Iterable[KeyValue], key: str) -> str:
    for attribute in attributes:
        if attribute.key == key and attribute.value.WhichOneof("value") == "string_value":
            return attribute.value.string_value
    return ""


def _span_row(span: SpanProto, service: str, resource_id: int, scope_id: int) -> tuple[Any, ...]:
    return (
        span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        service,
        span.name,
        span.kind,
        min(span.start_time_unix_nano, INT64_MAX),
        min(span.end_time_unix_nano, INT64_MAX),
        span.status.code,
        resource_id,
        scope_id,
        span.SerializeToString(),
    )
