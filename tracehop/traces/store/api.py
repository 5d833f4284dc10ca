"""Jaeger's query API v3 as the trace store answers it: routes, answers, OTLP/JSON.

Paths and answers follow Jaeger 2.20.0's HTTP gateway (cmd/jaeger/internal/extension/jaegerquery/internal/
apiv3/http_gateway.go; `server.go` beside it for what no route matches) over its memory store; parameters
are parsed in query_params.py. The conventions a client sees:
- success: `application/json`, OTLP/JSON with hex ids, integer enums, 64-bit integers as decimal strings,
  every span with a `status` (an empty one as `{}`), proto3 JSON elsewhere (an empty list left out, so no
  services is `{}`);
- errors come from Go's http.Error: `text/plain; charset=utf-8`, `X-Content-Type-Options: nosniff`, and a
  body that is the JSON `{"error":{"httpCode":…,"message":…}}` plus a newline; an unknown trace and an
  empty search are 404 "No traces found"; a path no route matches is 404 "404 page not found".
tests/unit/jaeger_parity.py is the table of these answers, with the Jaeger file behind each.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote

from google.protobuf import json_format
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store.attribute_text import go_json
from tracehop.traces.store.database import SpanDatabase, StoredSpan, TraceSearch
from tracehop.traces.store.ingest_batch import service_name
from tracehop.traces.store.otlp import JSON, BadRequest
from tracehop.traces.store.query_params import (
    SPAN_KIND,
    SearchParams,
    check_get_trace_params,
    get_param,
    parse_search,
    parse_trace_id,
)
from tracehop.traces.store.summaries import summarize_trace

TEXT = "text/plain; charset=utf-8"
NOT_FOUND_PAGE = "404 page not found\n"  # Go's http.NotFound body
NO_TRACES = "No traces found"
TRACES_PREFIX = "/api/v3/traces/"
# Methods a GET route answers (Go's ServeMux matches HEAD with GET patterns).
READ_METHODS = frozenset({"GET", "HEAD"})


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)


def answer_query(database: SpanDatabase, method: str, raw_path: str, query_string: str) -> Answer:
    """The answer to one request under /api/. `raw_path` is still percent-encoded: a base64 trace id may
    hold an encoded "/" (%2F), which must stay inside its path segment, as in Go's router."""
    query = parse_qs(query_string, keep_blank_values=True)
    route = _route(raw_path) if method in READ_METHODS else None
    if route is None:
        return Answer(404, TEXT, NOT_FOUND_PAGE.encode(), {"X-Content-Type-Options": "nosniff"})
    handler, argument = route
    try:
        return handler(database, query, *argument)
    except BadRequest as error:
        return error_answer(error.status, str(error))


def _route(raw_path: str) -> tuple[Any, tuple[str, ...]] | None:
    if raw_path.startswith(TRACES_PREFIX):
        segment = raw_path.removeprefix(TRACES_PREFIX)
        # {trace_id} matches one non-empty segment (Go's ServeMux wildcard).
        return (_get_trace, (unquote(segment),)) if segment and "/" not in segment else None
    routes = {
        "/api/v3/traces": _find_traces,
        "/api/v3/trace-summaries": _find_trace_summaries,
        "/api/v3/services": _get_services,
        "/api/v3/operations": _get_operations,
    }
    return (routes[raw_path], ()) if raw_path in routes else None


def error_answer(status: int, message: str) -> Answer:
    """http.Error with a GRPCGatewayError body, as apiv3/http_gateway.go tryHandleError writes it."""
    body = go_json({"error": {"httpCode": int(status), "message": message}}) + "\n"
    return Answer(int(status), TEXT, body.encode(), {"X-Content-Type-Options": "nosniff"})


def json_answer(document: Any) -> Answer:
    return Answer(200, JSON, json.dumps(document, separators=(",", ":")).encode())


# ------------------------------------------------------------------------------------------------ routes


def _get_trace(database: SpanDatabase, query: Mapping[str, list[str]], trace_id_text: str) -> Answer:
    trace_id = parse_trace_id(trace_id_text)
    check_get_trace_params(query)
    return _traces_answer(database, [database.trace(trace_id)])


def _find_traces(database: SpanDatabase, query: Mapping[str, list[str]]) -> Answer:
    search = trace_search(parse_search(query))
    return _traces_answer(database, list(database.traces(database.find_trace_ids(search)).values()))


def _find_trace_summaries(database: SpanDatabase, query: Mapping[str, list[str]]) -> Answer:
    search = trace_search(parse_search(query))
    traces = database.traces(database.find_trace_ids(search))
    resources = database.bodies(
        "resources", {span.resource_id for spans in traces.values() for span in spans}
    )
    services = {key: service_name(ResourceSpans.FromString(body)) for key, body in resources.items()}
    summaries = [
        summarize_trace((services[span.resource_id], SpanProto.FromString(span.body)) for span in spans)
        for spans in traces.values()
    ]
    return json_answer({"summaries": summaries} if summaries else {})


def _get_services(database: SpanDatabase, query: Mapping[str, list[str]]) -> Answer:
    services = database.services()
    return json_answer({"services": services} if services else {})


def _get_operations(database: SpanDatabase, query: Mapping[str, list[str]]) -> Answer:
    span_kind, _ = get_param(query, *SPAN_KIND)
    service = query.get("service", [""])[0]
    operations = [
        # apiv3/http_gateway.go getOperations: a kind stored as "" is reported as internal.
        {"name": name, "spanKind": kind or "internal"}
        for name, kind in database.operations(service, span_kind)
    ]
    return json_answer({"operations": operations} if operations else {})


def trace_search(params: SearchParams) -> TraceSearch:
    return TraceSearch(
        service=params.service,
        start_min_ns=params.start_min_ns,
        start_max_ns=params.start_max_ns,
        operation=params.operation or None,
        num_traces=params.depth,
        duration_min_ns=params.duration_min_ns,
        duration_max_ns=params.duration_max_ns,
        attributes=params.attributes,
    )


def _traces_answer(database: SpanDatabase, traces: list[list[StoredSpan]]) -> Answer:
    traces = [spans for spans in traces if spans]
    if not traces:
        return error_answer(HTTPStatus.NOT_FOUND, NO_TRACES)
    # Several traces come back as one flat list, each trace's entries in turn (returnTraces).
    resource_spans = [item for spans in traces for item in resource_spans_json(database, spans)]
    return json_answer({"result": {"resourceSpans": resource_spans}})


# ------------------------------------------------------------------------------------------ OTLP/JSON


def span_to_json(span: SpanProto) -> dict[str, Any]:
    """A span in OTLP/JSON as Jaeger writes it: defaults omitted but `status`, integer enums, hex ids."""
    document = json_format.MessageToDict(span, use_integers_for_enums=True)
    # json_format writes bytes as base64 (proto3 JSON); OTLP/JSON wants lowercase hex.
    document["traceId"] = span.trace_id.hex()
    document["spanId"] = span.span_id.hex()
    if span.parent_span_id:
        document["parentSpanId"] = span.parent_span_id.hex()
    for link, link_document in zip(span.links, document.get("links", []), strict=True):
        link_document["traceId"] = link.trace_id.hex()
        link_document["spanId"] = link.span_id.hex()
    document.setdefault("status", {})  # pdata's JSON writes the status even when empty
    return document


def resource_spans_json(database: SpanDatabase, spans: Sequence[StoredSpan]) -> list[dict[str, Any]]:
    """One trace's stored spans as OTLP/JSON resourceSpans: one entry per received resourceSpans entry,
    one scopeSpans per received scopeSpans entry, in arrival order (`spans` come in that order)."""
    resources = database.bodies("resources", (span.resource_id for span in spans))
    scopes = database.bodies("scopes", (span.scope_id for span in spans))
    result: list[dict[str, Any]] = []
    current_resource = current_scope = None
    for span in spans:
        if span.resource_chunk != current_resource:
            current_resource, current_scope = span.resource_chunk, None
            document = json_format.MessageToDict(ResourceSpans.FromString(resources[span.resource_id]))
            document.setdefault("resource", {})
            document["scopeSpans"] = []
            result.append(document)
        if span.scope_chunk != current_scope:
            current_scope = span.scope_chunk
            scope_document = json_format.MessageToDict(ScopeSpans.FromString(scopes[span.scope_id]))
            scope_document.setdefault("scope", {})
            scope_document["spans"] = []
            result[-1]["scopeSpans"].append(scope_document)
        result[-1]["scopeSpans"][-1]["spans"].append(span_to_json(SpanProto.FromString(span.body)))
    return result
