"""Local trace store: an OTLP/HTTP receiver, SQLite storage and the Jaeger query API v3 subset we use.

It stands in for Jaeger when no Docker engine runs. Services export to it exactly as they would to a
collector (`OTEL_EXPORTER_OTLP_ENDPOINT`), and tests read traces back with `TraceQuery`, the same client
that talks to a real Jaeger 2.x. So its answers follow Jaeger's: OTLP/JSON with hex ids, integer enums and
64-bit integers as decimal strings, 404 for "no such trace" or "no match", `{"error": {...}}` bodies.

Spans are stored as their serialized protobuf plus a few indexed columns; the resource and the
instrumentation scope are stored once each and referenced. A query rebuilds the exact OTLP it received.

Run: `python -m tracehop trace-store --otlp-port 4318 --query-port 16686 --db var/traces.sqlite3`.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import re
import signal
import sqlite3
import sys
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import status_pb2  # OTLP/HTTP error bodies are google.rpc.Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store import otlp_json_fast

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
# An SDK configured for every signal also posts metrics and logs: accept and drop them quietly.
DROPPED_SIGNAL_PATHS = frozenset({"/v1/metrics", "/v1/logs"})
MAX_BODY_BYTES = 64 * 1024 * 1024
SHUTDOWN_POLL_SECONDS = 0.05  # how quickly serve_forever notices a shutdown request
DEFAULT_NUM_TRACES = 20
UNKNOWN_SERVICE = "unknown_service"
INT64_MAX = 2**63 - 1  # SQLite integers are signed 64-bit; OTLP timestamps are fixed64
# Jaeger's /api/v3/operations reports kinds the way its v1 model names them.
OPERATION_KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


class BadRequest(ValueError):
    """The request cannot be served as sent; the message says why (becomes a 4xx body)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


# ---------------------------------------------------------------------------------------------- decoding


def decode_export_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode an OTLP/HTTP trace export body (protobuf or OTLP/JSON) and check its ids."""
    if content_type == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            raise BadRequest(f"body is not a protobuf ExportTraceServiceRequest: {error}") from None
    elif content_type == JSON:
        request = parse_otlp_json(body)
    else:
        raise BadRequest(
            f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}",
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        )
    check_ids(request)
    return request


def parse_otlp_json(body: bytes) -> ExportTraceServiceRequest:
    """Decode OTLP/JSON.

    It differs from the proto3 JSON mapping that `json_format` implements in one way that matters: trace
    and span ids are hex, not base64. So ids are rewritten to base64 before `ParseDict`, which already
    accepts the rest (enums as names or integers, 64-bit integers as strings or numbers). Unknown fields
    are ignored, as the OTLP specification requires of receivers.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("OTLP/JSON body must be an object with a resourceSpans list")
    try:
        # What exporters send, decoded five times faster than by json_format (otlp_json_fast.py).
        return otlp_json_fast.decode(document)
    except otlp_json_fast.NotCanonical:
        return parse_otlp_json_document(document)


def parse_otlp_json_document(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """The general decoder (json_format), for any document the fast one does not take."""
    for span in _json_spans(document):
        _hex_ids_to_base64(span)
        for link in _json_list(span, "links"):
            _hex_ids_to_base64(link)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except json_format.ParseError as error:
        raise BadRequest(f"body is not an OTLP/JSON ExportTraceServiceRequest: {error}") from None


def _json_list(parent: Any, key: str) -> list[Any]:
    # Shape errors are left for ParseDict to report; here we only skip what is not a list of objects.
    value = parent.get(key) if isinstance(parent, dict) else None
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _json_spans(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for resource_spans in _json_list(document, "resourceSpans"):
        for scope_spans in _json_list(resource_spans, "scopeSpans"):
            yield from _json_list(scope_spans, "spans")


_ID_FIELDS = {"traceId": "trace_id", "spanId": "span_id", "parentSpanId": "parent_span_id"}


def _hex_ids_to_base64(item: dict[str, Any]) -> None:
    for json_name, proto_name in _ID_FIELDS.items():
        for key in (json_name, proto_name):
            value = item.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", value):
                raise BadRequest(f"{json_name} must be a hex string in OTLP/JSON, got {value!r}")
            item[key] = _base64(bytes.fromhex(value))


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_ids(request: ExportTraceServiceRequest) -> None:
    """Reject spans whose ids cannot be stored or looked up (wrong length, all zero)."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _check_span_ids(span)


def _check_span_ids(span: SpanProto) -> None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        raise BadRequest(
            f"span {span.name!r}: trace id must be 16 bytes, not all zero ({span.trace_id.hex()!r})"
        )
    if len(span.span_id) != 8 or not any(span.span_id):
        raise BadRequest(
            f"span {span.name!r}: span id must be 8 bytes, not all zero ({span.span_id.hex()!r})"
        )
    if len(span.parent_span_id) not in (0, 8):
        raise BadRequest(f"span {span.name!r}: parent span id must be empty or 8 bytes")


def decompress(body: bytes, content_encoding: str) -> bytes:
    """Undo Content-Encoding (gzip, deflate or identity)."""
    encoding = content_encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as error:
        raise BadRequest(f"body is not valid {encoding}: {error}") from None
    raise BadRequest(f"unsupported Content-Encoding {content_encoding!r}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)


# ----------------------------------------------------------------------------------------------- storage

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
"""

_INSERT_SPAN = """
INSERT OR REPLACE INTO spans (trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns,
                              status_code, resource_id, scope_id, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


@dataclass(frozen=True)
class TraceSearch:
    """Parameters of `GET /api/v3/traces`, times and durations in nanoseconds."""

    service: str
    start_min_ns: int
    start_max_ns: int
    operation: str | None = None
    num_traces: int = DEFAULT_NUM_TRACES
    duration_min_ns: int | None = None
    duration_max_ns: int | None = None


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
        self._connection.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._connection.close()

    def insert(self, request: ExportTraceServiceRequest) -> int:
        """Store every span of one export request in one transaction; return how many.

        INSERT OR REPLACE on (trace_id, span_id): an exporter retrying a batch it thinks failed must not
        duplicate spans.
        """
        with self._lock, self._connection:
            rows = []
            for resource_spans in request.resource_spans:
                resource_id = self._intern("resources", _resource_key(resource_spans))
                service = service_name(resource_spans)
                for scope_spans in resource_spans.scope_spans:
                    scope_id = self._intern("scopes", _scope_key(scope_spans))
                    rows.extend(_span_row(span, service, resource_id, scope_id) for span in scope_spans.spans)
            self._connection.executemany(_INSERT_SPAN, rows)
        return len(rows)

    def _intern(self, table: str, body: bytes) -> int:
        self._connection.execute(f"INSERT OR IGNORE INTO {table} (body) VALUES (?)", (body,))
        (row_id,) = self._connection.execute(f"SELECT id FROM {table} WHERE body = ?", (body,)).fetchone()
        return row_id

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
        """Traces with at least one span meeting every condition, most recent first (as Jaeger does)."""
        sql = (
            "SELECT trace_id, MAX(start_ns) AS latest FROM spans"
            " WHERE service = ? AND start_ns BETWEEN ? AND ?"
        )
        args: list[Any] = [search.service, search.start_min_ns, search.start_max_ns]
        if search.operation:
            sql += " AND name = ?"
            args.append(search.operation)
        if search.duration_min_ns is not None:
            sql += " AND end_ns - start_ns >= ?"
            args.append(search.duration_min_ns)
        if search.duration_max_ns is not None:
            sql += " AND end_ns - start_ns <= ?"
            args.append(search.duration_max_ns)
        sql += " GROUP BY trace_id ORDER BY latest DESC LIMIT ?"
        args.append(search.num_traces)
        with self._lock:
            return [row[0] for row in self._connection.execute(sql, args)]

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


# --------------------------------------------------------------------------------------- OTLP/JSON output


def span_to_json(span: SpanProto) -> dict[str, Any]:
    """A span in OTLP/JSON as Jaeger writes it: defaults omitted, integer enums, hex ids."""
    document = json_format.MessageToDict(span, use_integers_for_enums=True)
    # json_format writes bytes as base64 (proto3 JSON); OTLP/JSON wants lowercase hex.
    document["traceId"] = span.trace_id.hex()
    document["spanId"] = span.span_id.hex()
    if span.parent_span_id:
        document["parentSpanId"] = span.parent_span_id.hex()
    for link, link_document in zip(span.links, document.get("links", []), strict=True):
        link_document["traceId"] = link.trace_id.hex()
        link_document["spanId"] = link.span_id.hex()
    return document


def resource_spans_json(database: SpanDatabase, spans: Sequence[StoredSpan]) -> list[dict[str, Any]]:
    """Group stored spans into OTLP/JSON resourceSpans: one entry per resource, one scopeSpans per scope."""
    resources = database.bodies("resources", (span.resource_id for span in spans))
    scopes = database.bodies("scopes", (span.scope_id for span in spans))
    grouped: dict[int, dict[int, list[dict[str, Any]]]] = {}
    for span in spans:
        span_document = span_to_json(SpanProto.FromString(span.body))
        grouped.setdefault(span.resource_id, {}).setdefault(span.scope_id, []).append(span_document)
    result = []
    for resource_id, by_scope in grouped.items():
        document = json_format.MessageToDict(ResourceSpans.FromString(resources[resource_id]))
        document.setdefault("resource", {})
        document["scopeSpans"] = [
            _scope_json(scopes[scope_id], scope_spans) for scope_id, scope_spans in by_scope.items()
        ]
        result.append(document)
    return result


def _scope_json(body: bytes, spans: list[dict[str, Any]]) -> dict[str, Any]:
    document = json_format.MessageToDict(ScopeSpans.FromString(body))
    document.setdefault("scope", {})
    document["spans"] = spans
    return document


# ----------------------------------------------------------------------------------- query API arguments

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})"
)
_DURATION_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9}
_DURATION_UNITS_NS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 timestamp (with up to nanosecond fraction, zone required, as Go's RFC3339Nano) -> ns."""
    match = _RFC3339.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 timestamp like 2026-01-02T15:04:05Z")
    zone = match["zone"].upper().replace("Z", "+00:00")
    moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{zone}")
    fraction = (match["fraction"] or "").ljust(9, "0")
    return int(moment.timestamp()) * 10**9 + int(fraction)


def parse_go_duration_ns(text: str) -> int:
    """Go duration string (`100ms`, `1.5s`, `1h2m`) -> nanoseconds, as Go's time.ParseDuration."""
    body = text.strip().removeprefix("+")
    if body == "0":
        return 0
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise ValueError(f"{text!r} is not a duration like 100ms, 1.5s or 2m")
    return round(sum(float(number) * _DURATION_UNITS_NS[unit] for number, unit in parts))


def _param(query: Mapping[str, list[str]], *names: str) -> str:
    """First non-empty value among snake_case and camelCase spellings of one parameter."""
    for name in names:
        values = query.get(name)
        if values and values[0] != "":
            return values[0]
    return ""


def parse_trace_search(query: Mapping[str, list[str]]) -> TraceSearch:
    """Parse the query string of `GET /api/v3/traces` the way Jaeger's HTTP gateway does."""
    service = _param(query, "query.service_name", "query.serviceName")
    start_min = _param(query, "query.start_time_min", "query.startTimeMin")
    start_max = _param(query, "query.start_time_max", "query.startTimeMax")
    if not start_min or not start_max:
        raise BadRequest("query.start_time_min and query.start_time_max are required")
    if not service:
        raise BadRequest("query.service_name is required")
    return TraceSearch(
        service=service,
        start_min_ns=_parsed(parse_rfc3339_ns, start_min, "query.start_time_min"),
        start_max_ns=_parsed(parse_rfc3339_ns, start_max, "query.start_time_max"),
        operation=_param(query, "query.operation_name", "query.operationName") or None,
        num_traces=_num_traces(query),
        duration_min_ns=_optional_duration(query, "query.duration_min", "query.durationMin"),
        duration_max_ns=_optional_duration(query, "query.duration_max", "query.durationMax"),
    )


def _parsed(parse: Any, value: str, name: str) -> Any:
    try:
        return parse(value)
    except ValueError as error:
        raise BadRequest(f"malformed parameter {name}: {error}") from None


def _num_traces(query: Mapping[str, list[str]]) -> int:
    names = ("query.num_traces", "query.numTraces", "query.search_depth", "query.searchDepth")
    text = _param(query, *names)
    if not text:
        return DEFAULT_NUM_TRACES
    number = _parsed(int, text, "query.num_traces")
    if number < 0:
        raise BadRequest("malformed parameter query.num_traces: must not be negative")
    return number or DEFAULT_NUM_TRACES


def _optional_duration(query: Mapping[str, list[str]], *names: str) -> int | None:
    text = _param(query, *names)
    return _parsed(parse_go_duration_ns, text, names[0]) if text else None


def normalise_trace_id(text: str) -> str:
    """Lowercase 32-hex trace id; shorter ids are left-padded with zeros as Jaeger does."""
    if not re.fullmatch(r"[0-9a-fA-F]{1,32}", text):
        raise BadRequest(f"malformed parameter trace_id: {text!r} is not a hex trace id of up to 32 digits")
    return text.lower().rjust(32, "0")


# -------------------------------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    """Shared plumbing: HTTP/1.1 keep-alive (SDK exporters reuse connections), quiet logs."""

    protocol_version = "HTTP/1.1"
    server: _StoreServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the stack's logs

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, document: Any) -> None:
        self.send_body(status, json.dumps(document, separators=(",", ":")).encode(), JSON)

    def handle_one_request(self) -> None:
        # A bug must answer 500 with a message, not drop the connection and print a traceback per request.
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as error:  # last resort: answer 500
            request = f"{getattr(self, 'command', '?')} {getattr(self, 'path', '?')}"
            sys.stderr.write(f"trace store: {request} failed: {error!r}\n")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_json(500, {"error": {"httpCode": 500, "message": f"internal error: {error}"}})


class OtlpHandler(_Handler):
    """`POST /v1/traces` with OTLP/HTTP protobuf or JSON, optionally gzip-compressed."""

    def do_POST(self) -> None:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            body = self._read_body()
        except BadRequest as error:
            self.close_connection = True
            self._send_status(error.status, str(error), content_type)
            return
        path = urlsplit(self.path).path.rstrip("/")
        if path in DROPPED_SIGNAL_PATHS:
            self._send_success(content_type)
        elif path != TRACES_PATH:
            self._send_status(
                HTTPStatus.NOT_FOUND, f"unknown path {path!r}: traces go to {TRACES_PATH}", content_type
            )
        else:
            self._export(body, content_type)

    def do_GET(self) -> None:
        status = (
            HTTPStatus.METHOD_NOT_ALLOWED if urlsplit(self.path).path == TRACES_PATH else HTTPStatus.NOT_FOUND
        )
        self._send_status(status, f"{self.command} {self.path}: the OTLP receiver only accepts POST", JSON)

    def _export(self, body: bytes, content_type: str) -> None:
        try:
            data = decompress(body, self.headers.get("Content-Encoding", ""))
            request = decode_export_request(data, content_type)
        except BadRequest as error:
            self._send_status(error.status, str(error), content_type)
            return
        self.server.database.insert(request)
        self._send_success(content_type)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise BadRequest("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(
                    f"body larger than {MAX_BODY_BYTES} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
                )
            chunks.append(self.rfile.read(size))
            self.rfile.readline(16)  # CRLF after the chunk

    def _send_success(self, content_type: str) -> None:
        if content_type == PROTOBUF:
            self.send_body(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)
        else:
            self.send_json(200, {})

    def _send_status(self, status: int, message: str, content_type: str) -> None:
        """OTLP/HTTP error answer: a google.rpc.Status in the request's encoding."""
        error = status_pb2.Status(code=_GRPC_CODES.get(status, 3), message=message)
        if content_type == PROTOBUF:
            self.send_body(status, error.SerializeToString(), PROTOBUF)
        else:
            self.send_json(status, json_format.MessageToDict(error))


# HTTP status -> gRPC code of the Status body (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, ...).
_GRPC_CODES = {400: 3, 404: 5, 405: 12, 413: 3, 415: 3}


class QueryHandler(_Handler):
    """The Jaeger query API v3 subset: traces by id, search, services, operations."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            if path.startswith("/api/v3/traces/"):
                self._get_trace(unquote(path.removeprefix("/api/v3/traces/")))
            elif path == "/api/v3/traces":
                self._find_traces(query)
            elif path == "/api/v3/services":
                self.send_json(200, {"services": self.server.database.services()})
            elif path == "/api/v3/operations":
                self._get_operations(query)
            else:
                self._send_error(HTTPStatus.NOT_FOUND, f"unknown path {url.path!r}")
        except BadRequest as error:
            self._send_error(error.status, str(error))

    do_HEAD = do_GET

    def _get_trace(self, trace_id_text: str) -> None:
        trace_id = normalise_trace_id(trace_id_text)
        spans = self.server.database.trace(trace_id)
        if not spans:
            self._send_error(HTTPStatus.NOT_FOUND, f"trace not found: {trace_id}")
            return
        self._send_resource_spans([spans])

    def _find_traces(self, query: Mapping[str, list[str]]) -> None:
        search = parse_trace_search(query)
        database = self.server.database
        traces = database.traces(database.find_trace_ids(search))
        if not traces:
            self._send_error(HTTPStatus.NOT_FOUND, "No traces found")
            return
        self._send_resource_spans(list(traces.values()))

    def _get_operations(self, query: Mapping[str, list[str]]) -> None:
        service = _param(query, "service")
        operations = self.server.database.operations(service, _param(query, "span_kind", "spanKind"))
        self.send_json(200, {"operations": [{"name": name, "spanKind": kind} for name, kind in operations]})

    def _send_resource_spans(self, traces: list[list[StoredSpan]]) -> None:
        # Several traces come back as one flat list, each trace's resources in turn, as Jaeger does.
        resource_spans = [
            item for spans in traces for item in resource_spans_json(self.server.database, spans)
        ]
        self.send_json(200, {"result": {"resourceSpans": resource_spans}})

    def _send_error(self, status: int, message: str) -> None:
        self.send_json(status, {"error": {"httpCode": int(status), "message": message}})


class _StoreServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], database: SpanDatabase) -> None:
        super().__init__(address, handler)
        self.database = database


# -------------------------------------------------------------------------------------------- processes


class RunningTraceStore:
    """Both servers serving from background threads; `stop()` (or leaving the `with`) shuts them down."""

    def __init__(self, otlp_port: int, query_port: int, db_path: str | os.PathLike[str], host: str) -> None:
        self.db_path = db_path
        self.host = host
        self.database = SpanDatabase(db_path)
        self._servers: list[_StoreServer] = []
        try:
            for port, handler in ((otlp_port, OtlpHandler), (query_port, QueryHandler)):
                self._servers.append(_StoreServer((host, port), handler, self.database))
        except OSError:
            self._close()
            raise
        self._threads = [
            threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                name=f"trace-store-{server.server_port}",
                daemon=True,
            )
            for server in self._servers
        ]
        for thread in self._threads:
            thread.start()
        self._stopped = False

    @property
    def otlp_port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def query_port(self) -> int:
        return self._servers[1].server_address[1]

    @property
    def otlp_endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{self.host}:{self.otlp_port}"

    @property
    def traces_url(self) -> str:
        """Full URL for an OTLPSpanExporter(endpoint=...)."""
        return self.otlp_endpoint + TRACES_PATH

    @property
    def query_url(self) -> str:
        """Base URL for TraceQuery."""
        return f"http://{self.host}:{self.query_port}"

    def stop(self) -> None:
        """Stop serving, wait for the server threads and close the database (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        # In parallel: each shutdown waits up to one poll interval for its serve_forever loop.
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for thread in [*stoppers, *self._threads]:
            thread.join()
        self._close()

    def _close(self) -> None:
        for server in self._servers:
            server.server_close()
        self.database.close()

    def __enter__(self) -> RunningTraceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_in_thread(
    otlp_port: int = 0,
    query_port: int = 0,
    db_path: str | os.PathLike[str] = ":memory:",
    host: str = "127.0.0.1",
) -> RunningTraceStore:
    """Start the store in background threads (port 0 picks a free port); for tests and embedding."""
    return RunningTraceStore(otlp_port, query_port, db_path, host)


def run(otlp_port: int, query_port: int, db_path: str | os.PathLike[str], host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (blocking)."""
    stop_requested = threading.Event()
    store = serve_in_thread(otlp_port, query_port, db_path, host)
    previous = {
        sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    sys.stderr.write(
        f"trace store: OTLP/HTTP on {store.traces_url}, query API v3 on {store.query_url}/api/v3, "
        f"database {db_path}\n"
    )
    sys.stderr.flush()
    try:
        stop_requested.wait()
    finally:
        store.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
