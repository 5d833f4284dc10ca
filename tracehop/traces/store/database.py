"""SQLite storage of spans: each span's serialized protobuf plus a few indexed columns.

The resource and the instrumentation scope are stored once each and referenced, so a query (api.py)
rebuilds the exact OTLP the store received, grouped as it arrived: like Jaeger's memory store
(internal/storage/v2/memory/memory.go reshuffleResourceSpans, v2.20.0), each received resourceSpans entry
and each scopeSpans entry in it is a "chunk", and a trace is answered chunk by chunk in arrival order.
The `traces` table numbers traces in the order they were first received: searches answer the most recently
received first, as Jaeger's ring buffer does (memory/tenant.go findTraceAndIds).
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from tracehop.traces.store import indexing, ingest_batch
from tracehop.traces.store.attribute_text import as_string
from tracehop.traces.store.ingest_batch import ResourceGroup
from tracehop.traces.store.query_params import DEFAULT_SEARCH_DEPTH
from tracehop.traces.store.retention import (
    PRUNE_CHUNK_TRACES,
    Retention,
    age_cutoff,
    count_cutoff,
    delete_oldest_traces,
)
from tracehop.traces.store.service_map import ServiceMap, build_service_map
from tracehop.traces.store.span_filter import ScopeInfo, span_conditions

DEFAULT_NUM_TRACES = DEFAULT_SEARCH_DEPTH
# Span kinds as Jaeger's memory store records operations (memory/tenant.go fromOTELSpanKind): an
# unspecified (or unknown) kind is "", which the API then reports as "internal".
OPERATION_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


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
    resource_chunk INTEGER NOT NULL DEFAULT 0,
    scope_chunk INTEGER NOT NULL DEFAULT 0,
    UNIQUE (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_service_start ON spans (service, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_start ON spans (start_ns);
CREATE TABLE IF NOT EXISTS traces (
    seq INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL UNIQUE,
    min_start_ns INTEGER NOT NULL,
    max_start_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_by_max_start ON traces (max_start_ns);
"""
# user_version 0: no attribute index; 1: no chunks, no traces table, attribute text before pdata's
# AsString. Such databases are brought up to date once when opened (_migrate).
_SCHEMA_VERSION = 2

_UPSERT_TRACE = """
INSERT INTO traces (trace_id, min_start_ns, max_start_ns) VALUES (?, ?, ?)
ON CONFLICT (trace_id) DO UPDATE SET min_start_ns = MIN(min_start_ns, excluded.min_start_ns),
                                     max_start_ns = MAX(max_start_ns, excluded.max_start_ns)
"""

# A new span goes in with INSERT OR IGNORE; one received before (an exporter's retry) is then replaced
# (_replace_earlier_copy): the common case costs one statement.
_SPAN_COLUMNS = """spans (trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns,
                       status_code, resource_id, scope_id, body, resource_chunk, scope_chunk)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_SPAN = "INSERT OR IGNORE INTO " + _SPAN_COLUMNS
_REPLACE_SPAN = "INSERT OR REPLACE INTO " + _SPAN_COLUMNS
_EARLIER_COPY = "SELECT rowid, body FROM spans WHERE trace_id = ? AND span_id = ?"
# Write transactions wait this long for a writer outside the store (the sqlite3 shell) before failing;
# reads never wait for a writer in WAL mode, but wait as long while SQLite recovers the WAL after a crash.
BUSY_TIMEOUT_MS = 5000
# Read connections kept open between queries; more are opened while more queries run at once.
IDLE_READERS = 4


@dataclass(frozen=True)
class TraceSearch:
    """Parameters of `GET /api/v3/traces`, times and durations in nanoseconds.

    One span of the trace must meet the span conditions together (service, operation, window, durations,
    attributes), with Jaeger's meaning (span_filter.py). `service` "" means any service.
    `attributes`: `query.attributes` pairs, special keys (`error`, `span.kind`, ...) included.
    `errors_only` (the viewer): some span of the trace has status ERROR. `parent_service` (the viewer's
    service map): the span's parent is a span of that service (an edge parent -> `service`).
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
    resource_chunk: int = 0  # the received resourceSpans entry it came in
    scope_chunk: int = 0  # the received scopeSpans entry it came in


class SpanDatabase:
    """SQLite storage of spans: one writer, and readers of their own for queries.

    Writes (ingest, retention) go through one connection guarded by a lock: SQLite has one writer at a
    time anyway, and the HTTP servers start a thread per request, so per-thread connections would pile up.
    Queries use read connections from a small pool: in WAL mode a reader sees the last committed state and
    never waits for the writer, so a query is answered while a large export or a prune is being written
    (before, they shared the writer's lock and a restarted store answered nothing until every service's
    retried backlog was in). An in-memory database cannot be shared between connections: there, reads
    take the writer's connection and lock.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        path = os.fspath(path)
        self._path = path
        self._in_memory = path == ":memory:"
        if not self._in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the writer's
        self._connection = sqlite3.connect(path, check_same_thread=False)
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")  # durable enough for a local dev store
        self._connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._migrate()
        self._connection.executescript(_SCHEMA + indexing.SCHEMA)
        self._reindex_old_database()
        (last_chunk,) = self._connection.execute(
            "SELECT MAX(MAX(resource_chunk), MAX(scope_chunk)) FROM spans"
        ).fetchone()
        self._last_chunk = last_chunk or 0
        self._scopes: dict[int, ScopeInfo] = {}
        self._scopes_lock = threading.Lock()
        # Row ids of the resources and scopes stored (by table and serialised body): each export request
        # names its process's resource and scopes again, and looking them up (with the resource's
        # attribute rows) cost about a tenth of `insert`'s CPU (tracehop/bench/ingest_cost.py). Rows of
        # both tables are never deleted (retention.py deletes spans and traces): a known id stays valid.
        self._interned: dict[tuple[str, bytes], int] = {}
        self._idle_readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._closed = False

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for one query, its statements in one read transaction (one consistent snapshot)."""
        if self._in_memory:
            with self._lock:
                yield self._connection
            return
        try:
            connection = self._idle_readers.get_nowait()
        except queue.Empty:
            connection = self._open_reader()
        try:
            connection.execute("BEGIN")
            try:
                yield connection
            finally:
                connection.execute("COMMIT")
        except BaseException:
            connection.close()  # in an unknown state: not given out again
            raise
        if self._closed or self._idle_readers.qsize() >= IDLE_READERS:
            connection.close()
        else:
            self._idle_readers.put(connection)

    def _open_reader(self) -> sqlite3.Connection:
        # Autocommit mode (isolation_level None): _reading opens and ends each read transaction itself.
        connection = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        return connection

    def close(self) -> None:
        self._closed = True
        while not self._idle_readers.empty():
            self._idle_readers.get_nowait().close()
        with self._lock:
            self._connection.close()

    def insert(self, request: ExportTraceServiceRequest) -> int:
        """Store every span of one export request in one transaction; return how many."""
        return self.insert_groups(ingest_batch.from_request(request))

    def insert_groups(self, groups: list[ResourceGroup]) -> int:
        """Store every span of one export request (ingest_batch.py) in one transaction; return how many.

        One row per (trace_id, span_id): an exporter retrying a batch it thinks failed must not duplicate
        spans; the copy received last replaces the earlier one.
        """
        count = 0
        interned: dict[tuple[str, bytes], int] = {}  # known once this transaction commits
        with self._lock:
            with self._connection:
                cursor = self._connection.cursor()
                terms: list[tuple[str, str, int]] = []
                # Each trace's earliest and latest span start in this request, in order of first arrival:
                # one upsert per trace rather than per span, with the same result.
                traces: dict[str, list[int]] = {}
                for group in groups:
                    resource_id = self._known("resources", group.key, interned, group.resource_spans)
                    service = group.service
                    resource_chunk = self._next_chunk()
                    for scope in group.scopes:
                        scope_id = self._known("scopes", scope.key, interned)
                        scope_chunk = self._next_chunk()
                        for (
                            trace_id,
                            span_id,
                            parent,
                            name,
                            kind,
                            start,
                            end,
                            status,
                            body,
                            span_terms,
                        ) in scope.spans:
                            row = (
                                trace_id, span_id, parent, service, name, kind, start, end, status,
                                resource_id, scope_id, body, resource_chunk, scope_chunk,
                            )  # fmt: skip
                            # One execute per span (not executemany): the attribute rows need its rowid.
                            cursor.execute(_INSERT_SPAN, row)
                            if cursor.rowcount == 0:  # received before
                                self._replace_earlier_copy(cursor, row, terms)
                            rowid = cursor.lastrowid
                            terms.extend((key, value, rowid) for key, value in span_terms)
                            starts = traces.get(trace_id)
                            if starts is None:
                                traces[trace_id] = [start, start]
                            elif start < starts[0]:
                                starts[0] = start
                            elif start > starts[1]:
                                starts[1] = start
                            count += 1
                cursor.executemany(indexing.INSERT_SPAN_ATTRIBUTE, terms)
                # In arrival order: a trace's number is that of its first span ever received.
                cursor.executemany(
                    _UPSERT_TRACE, [(trace_id, low, high) for trace_id, (low, high) in traces.items()]
                )
            # Ids of rows this transaction stored are valid once it has committed (it did: no exception).
            self._interned.update(interned)
        return count

    def _known(
        self,
        table: str,
        body: bytes,
        interned: dict[tuple[str, bytes], int],
        resource_spans: ResourceSpans | None = None,
    ) -> int:
        """The row id of a resource or scope, stored (with a resource's attribute rows) if new."""
        key = (table, body)
        row_id = self._interned.get(key, interned.get(key))
        if row_id is None:
            row_id = self._intern_resource(resource_spans) if resource_spans else self._intern(table, body)
            interned[key] = row_id
        return row_id

    @staticmethod
    def _replace_earlier_copy(
        cursor: sqlite3.Cursor, row: tuple[Any, ...], pending_terms: list[tuple[str, str, int]]
    ) -> None:
        """A span received again (an exporter's retry) replaces its earlier copy, under a new rowid (it
        takes its place in arrival order); the earlier copy's attribute rows go with it, else a search
        could match them forever (those still pending too, when the copy came in the same request)."""
        rowid, body = cursor.execute(_EARLIER_COPY, row[:2]).fetchone()
        cursor.executemany(indexing.DELETE_SPAN_ATTRIBUTE, indexing.span_rows(rowid, body))
        pending_terms[:] = [term for term in pending_terms if term[2] != rowid]
        cursor.execute(_REPLACE_SPAN, row)

    def _next_chunk(self) -> int:
        self._last_chunk += 1
        return self._last_chunk

    def _intern(self, table: str, body: bytes) -> int:
        self._connection.execute(f"INSERT OR IGNORE INTO {table} (body) VALUES (?)", (body,))
        (row_id,) = self._connection.execute(f"SELECT id FROM {table} WHERE body = ?", (body,)).fetchone()
        return row_id

    def _intern_resource(self, resource_spans: ResourceSpans) -> int:
        resource_id = self._intern("resources", ingest_batch.resource_key(resource_spans))
        terms = indexing.searchable(resource_spans.resource.attributes)
        self._connection.executemany(
            indexing.INSERT_RESOURCE_ATTRIBUTE, [(key, value, resource_id) for key, value in terms]
        )
        return resource_id

    def _migrate(self) -> None:
        """Bring a database of an older store up to _SCHEMA_VERSION (before the new schema is applied)."""
        with self._lock, self._connection:
            (version,) = self._connection.execute("PRAGMA user_version").fetchone()
            columns = {row[1] for row in self._connection.execute("PRAGMA table_info(spans)")}
            if version >= _SCHEMA_VERSION or not columns:
                return  # up to date, or a new database
            if "resource_chunk" not in columns:
                for column in ("resource_chunk", "scope_chunk"):
                    self._connection.execute(
                        f"ALTER TABLE spans ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0"
                    )
                # Spans stored before chunks keep the grouping they were answered with: by resource, by scope.
                self._connection.execute(
                    "UPDATE spans SET resource_chunk = resource_id, scope_chunk = scope_id"
                )
            self._connection.executescript(_SCHEMA)
            self._connection.execute(
                "INSERT OR IGNORE INTO traces (trace_id, min_start_ns, max_start_ns)"
                " SELECT trace_id, MIN(start_ns), MAX(start_ns) FROM spans"
                " GROUP BY trace_id ORDER BY MIN(rowid)"
            )
            # The attribute index is rebuilt below: its text is pdata's AsString now, links included.
            for table in ("span_attributes", "resource_attributes"):
                self._connection.execute(f"DROP TABLE IF EXISTS {table}")
            self._connection.execute("PRAGMA user_version = 0")

    def _reindex_old_database(self) -> None:
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
                [row for rowid, body in rows for row in indexing.span_rows(rowid, body)],
            )
            self._connection.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")

    def trace(self, trace_id: str) -> list[StoredSpan]:
        return self.traces([trace_id]).get(trace_id, [])

    def traces(self, trace_ids: Sequence[str]) -> dict[str, list[StoredSpan]]:
        """Spans of each trace, keyed in the order of `trace_ids`, each in the order received."""
        found: dict[str, list[StoredSpan]] = {trace_id: [] for trace_id in trace_ids}
        if not trace_ids:
            return found
        marks = ",".join("?" * len(trace_ids))
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT trace_id, resource_id, scope_id, body, resource_chunk, scope_chunk FROM spans"
                f" WHERE trace_id IN ({marks}) ORDER BY resource_chunk, scope_chunk, rowid",
                list(trace_ids),
            ).fetchall()
        for trace_id, *stored in rows:
            found[trace_id].append(StoredSpan(*stored))
        return {trace_id: spans for trace_id, spans in found.items() if spans}

    def find_trace_ids(self, search: TraceSearch) -> list[str]:
        """Traces with one span meeting every span condition, the most recently received first (as Jaeger).

        A search that names a service, an operation or attributes first collects the matching spans'
        traces through the indexes, then walks the traces newest first; one without (a time window only)
        walks the traces newest first and asks each for a matching span, stopping at `num_traces`.
        """
        selective = bool(search.service or search.operation or search.attributes or search.parent_service)
        scopes = self._scope_infos() if search.attributes else {}
        conditions, args = span_conditions(search, scopes, by_trace=not selective)
        if search.parent_service:
            conditions += (
                " AND EXISTS (SELECT 1 FROM spans AS p WHERE p.trace_id = s.trace_id"
                " AND p.span_id = s.parent_span_id AND p.service = ?)"
            )
            args.append(search.parent_service)
        if selective:
            matching = f"t.trace_id IN (SELECT s.trace_id FROM spans AS s WHERE 1{conditions})"
        else:
            matching = f"EXISTS (SELECT 1 FROM spans AS s WHERE s.trace_id = t.trace_id{conditions})"
        sql = (
            "SELECT t.trace_id FROM traces AS t WHERE t.max_start_ns >= ? AND t.min_start_ns <= ?"
            f" AND {matching}"
        )
        args = [search.start_min_ns, search.start_max_ns, *args]
        if search.errors_only:
            sql += (
                " AND EXISTS (SELECT 1 FROM spans AS e WHERE e.trace_id = t.trace_id AND e.status_code = 2)"
            )
        sql += " ORDER BY t.seq DESC LIMIT ?"
        args.append(search.num_traces)
        with self._reading() as connection:
            return [trace_id for (trace_id,) in connection.execute(sql, args)]

    def _scope_infos(self) -> dict[int, ScopeInfo]:
        """Every stored scope's name, version and attribute texts (scopes are few and never deleted)."""
        with self._scopes_lock:
            known = max(self._scopes, default=0)
            with self._reading() as connection:
                rows = connection.execute("SELECT id, body FROM scopes WHERE id > ?", (known,)).fetchall()
            for scope_id, body in rows:
                scope = ScopeSpans.FromString(body).scope
                attributes = {item.key: as_string(item.value) for item in scope.attributes}
                self._scopes[scope_id] = ScopeInfo(scope.name, scope.version, attributes)
            return dict(self._scopes)

    def service_map(
        self, start_min_ns: int, start_max_ns: int, trace_ids: Sequence[str] | None = None
    ) -> ServiceMap:
        """Services and cross-service calls of the spans starting in the window (see service_map.py)."""
        with self._reading() as connection:
            return build_service_map(connection, start_min_ns, start_max_ns, trace_ids)

    def prune(self, retention: Retention, now_ns: int) -> int:
        """Delete whole traces beyond `retention` (by age, then by span count); return how many spans.

        Chunk by chunk (retention.py): the writer's lock is let go between chunks, so exports go on.
        """
        deleted = self._delete_traces_before(age_cutoff(retention, now_ns))
        with self._reading() as connection:
            cutoff = count_cutoff(connection, retention)
        return deleted + self._delete_traces_before(cutoff)

    def _delete_traces_before(self, cutoff_ns: int | None) -> int:
        deleted = 0
        while cutoff_ns is not None:
            with self._lock, self._connection:
                traces, spans = delete_oldest_traces(self._connection, cutoff_ns, PRUNE_CHUNK_TRACES)
            deleted += spans
            if traces < PRUNE_CHUNK_TRACES:
                break
        return deleted

    def services(self) -> list[str]:
        """Names of the services seen, sorted; a resource without service.name names none (as Jaeger)."""
        with self._reading() as connection:
            rows = connection.execute("SELECT DISTINCT service FROM spans WHERE service != '' ORDER BY 1")
            return [row[0] for row in rows]

    def operations(self, service: str, span_kind: str = "") -> list[tuple[str, str]]:
        """(name, kind) of the operations of `service`, sorted, as Jaeger's memory store keeps them.

        `kind` is "server", "client", ... or "" for an unspecified kind; `span_kind` keeps those whose kind
        is exactly that text (memory/memory.go GetOperations compares the raw stored kind).
        """
        if not service:
            return []
        with self._reading() as connection:
            rows = connection.execute(
                "SELECT DISTINCT name, kind FROM spans WHERE service = ?", (service,)
            ).fetchall()
        operations = sorted({(name, OPERATION_KINDS.get(kind, "")) for name, kind in rows})
        return [op for op in operations if not span_kind or op[1] == span_kind]

    def bodies(self, table: str, ids: Iterable[int]) -> dict[int, bytes]:
        """Serialized resources or scopes by id (`table` is "resources" or "scopes")."""
        wanted = sorted(set(ids))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        with self._reading() as connection:
            rows = connection.execute(f"SELECT id, body FROM {table} WHERE id IN ({marks})", wanted)
            return dict(rows.fetchall())
