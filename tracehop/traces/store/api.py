"""The Jaeger query API v3 subset we answer: its arguments parsed, its answers as OTLP/JSON.

Jaeger's conventions: hex ids, integer enums and 64-bit integers as decimal strings.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store.database import DEFAULT_NUM_TRACES, SpanDatabase, StoredSpan, TraceSearch
from tracehop.traces.store.otlp import BadRequest


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


def query_param(query: Mapping[str, list[str]], *names: str) -> str:
    """First non-empty value among snake_case and camelCase spellings of one parameter."""
    for name in names:
        values = query.get(name)
        if values and values[0] != "":
            return values[0]
    return ""


def parse_trace_search(query: Mapping[str, list[str]]) -> TraceSearch:
    """Parse the query string of `GET /api/v3/traces` the way Jaeger's HTTP gateway does."""
    service = query_param(query, "query.service_name", "query.serviceName")
    start_min = query_param(query, "query.start_time_min", "query.startTimeMin")
    start_max = query_param(query, "query.start_time_max", "query.startTimeMax")
    if not start_min or not start_max:
        raise BadRequest("query.start_time_min and query.start_time_max are required")
    if not service:
        raise BadRequest("query.service_name is required")
    return TraceSearch(
        service=service,
        start_min_ns=_parsed(parse_rfc3339_ns, start_min, "query.start_time_min"),
        start_max_ns=_parsed(parse_rfc3339_ns, start_max, "query.start_time_max"),
        operation=query_param(query, "query.operation_name", "query.operationName") or None,
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
    text = query_param(query, *names)
    if not text:
        return DEFAULT_NUM_TRACES
    number = _parsed(int, text, "query.num_traces")
    if number < 0:
        raise BadRequest("malformed parameter query.num_traces: must not be negative")
    return number or DEFAULT_NUM_TRACES


def _optional_duration(query: Mapping[str, list[str]], *names: str) -> int | None:
    text = query_param(query, *names)
    return _parsed(parse_go_duration_ns, text, names[0]) if text else None


def normalise_trace_id(text: str) -> str:
    """Lowercase 32-hex trace id; shorter ids are left-padded with zeros as Jaeger does."""
    if not re.fullmatch(r"[0-9a-fA-F]{1,32}", text):
        raise BadRequest(f"malformed parameter trace_id: {text!r} is not a hex trace id of up to 32 digits")
    return text.lower().rjust(32, "0")


# ------------------------------------------------------------------------------------------------ answers


def answer_query(database: SpanDatabase, path: str, query_string: str) -> tuple[int, dict[str, Any]]:
    """The Jaeger query API v3 subset (traces by id, search, services, operations): (status, JSON body)."""
    stripped = path.rstrip("/")
    query = parse_qs(query_string, keep_blank_values=True)
    try:
        if stripped.startswith("/api/v3/traces/"):
            return _get_trace(database, unquote(stripped.removeprefix("/api/v3/traces/")))
        if stripped == "/api/v3/traces":
            return _find_traces(database, query)
        if stripped == "/api/v3/services":
            return 200, {"services": database.services()}
        if stripped == "/api/v3/operations":
            operations = database.operations(
                query_param(query, "service"), query_param(query, "span_kind", "spanKind")
            )
            return 200, {"operations": [{"name": name, "spanKind": kind} for name, kind in operations]}
        return _error(HTTPStatus.NOT_FOUND, f"unknown path {path!r}")
    except BadRequest as error:
        return _error(error.status, str(error))


def encode_json(document: Any) -> bytes:
    """The query API's JSON encoding (compact, as the answers have always been)."""
    return json.dumps(document, separators=(",", ":")).encode()


def _get_trace(database: SpanDatabase, trace_id_text: str) -> tuple[int, dict[str, Any]]:
    trace_id = normalise_trace_id(trace_id_text)
    spans = database.trace(trace_id)
    if not spans:
        return _error(HTTPStatus.NOT_FOUND, f"trace not found: {trace_id}")
    return _resource_spans(database, [spans])


def _find_traces(database: SpanDatabase, query: Mapping[str, list[str]]) -> tuple[int, dict[str, Any]]:
    search = parse_trace_search(query)
    traces = database.traces(database.find_trace_ids(search))
    if not traces:
        return _error(HTTPStatus.NOT_FOUND, "No traces found")
    return _resource_spans(database, list(traces.values()))


def _resource_spans(database: SpanDatabase, traces: list[list[StoredSpan]]) -> tuple[int, dict[str, Any]]:
    # Several traces come back as one flat list, each trace's resources in turn, as Jaeger does.
    resource_spans = [item for spans in traces for item in resource_spans_json(database, spans)]
    return 200, {"result": {"resourceSpans": resource_spans}}


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return int(status), {"error": {"httpCode": int(status), "message": message}}
