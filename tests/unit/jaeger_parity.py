"""What Jaeger 2.20.0 answers on its query API v3, written down as data: the parity table of the trace store.

Each `Row` is one request shape and the answer Jaeger gives to it: status, Content-Type and the shape of the
body, with the Jaeger source file that says so in a comment (paths at tag v2.20.0; `apiv3/` is
cmd/jaeger/internal/extension/jaegerquery/internal/apiv3/, `memory/` is internal/storage/v2/memory/). Jaeger's
storage there is the in-memory store: the one the all-in-one image of our compose stack runs.

A row may carry `ours`: what the local store answers instead, ON PURPOSE, and `why`. Those rows are the
store's known differences (its docstring and docs/full-stack.md list the same). test_jaeger_parity.py sends
every row to a real store that received the batches of jaeger_parity_spans.py over OTLP/HTTP and checks
each answer.

Requests are templates: `{A}` is trace A's hex id, `{A64}` its base64, `{min}`/`{max}` a window around
every span; `{t0}` the first span's start; `{now}` the time of the run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.unit.jaeger_parity_shapes import (
    error,
    exactly,
    operations,
    plain,
    services,
    summaries,
    trace_count,
    traces,
)
from tests.unit.jaeger_parity_spans import A_RESOURCES, MANY_TRACES, MS, TRACE_IDS, summary_a

JSON = "application/json"
# http.Error (net/http) sets this type, and X-Content-Type-Options: nosniff, on every error answer.
TEXT = "text/plain; charset=utf-8"

# Canonical names and their deprecated snake_case aliases (apiv3/query_parser.go, the two const blocks).
ALIASES = {
    "query.serviceName": "query.service_name",
    "query.operationName": "query.operation_name",
    "query.startTimeMin": "query.start_time_min",
    "query.startTimeMax": "query.start_time_max",
    "query.searchDepth": "query.search_depth",
    "query.durationMin": "query.duration_min",
    "query.durationMax": "query.duration_max",
    "query.rawTraces": "query.raw_traces",
    "startTime": "start_time",
    "endTime": "end_time",
    "rawTraces": "raw_traces",
    "spanKind": "span_kind",
}

# ------------------------------------------------------------------------------------------------ the rows


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: Callable[[Any], None]  # receives parsed JSON for application/json, text otherwise


@dataclass(frozen=True)
class Row:
    name: str
    path: str  # with its query string; templates as described above
    jaeger: Answer
    source: str  # the Jaeger file(s) that give this answer
    method: str = "GET"
    store: str = "batches"  # "batches", "many" or "empty"
    ours: Answer | None = None  # what the local store answers instead, on purpose
    why: str = ""
    both_spellings: bool = False  # also send it with the deprecated snake_case names; same answer

    @property
    def expected(self) -> Answer:
        return self.ours or self.jaeger


WINDOW = "query.startTimeMin={min}&query.startTimeMax={max}"


def rows(t0: int) -> list[Row]:
    """The table. `t0` is the first span's start (the summaries carry absolute times)."""
    return [
        # ---------------------------------------------------------------- GET /api/v3/traces/{trace_id}
        Row(
            "trace found: one resourceSpans per received batch and resource, in arrival order",
            "/api/v3/traces/{A}",
            # apiv3/http_gateway.go getTrace -> returnTraces; memory/memory.go reshuffleResourceSpans and
            # memory/tenant.go storeTraces (MoveAndAppendTo: each batch appended, never merged)
            Answer(200, JSON, traces("A", resources=A_RESOURCES)),
            "apiv3/http_gateway.go, memory/memory.go, memory/tenant.go",
        ),
        Row(
            "trace id in capitals",
            "/api/v3/traces/{A_UPPER}",
            # model.TraceIDFromString parses hex with strconv.ParseUint (either case)
            Answer(200, JSON, traces("A")),
            "apiv3/http_gateway.go TraceIDFromString",
        ),
        Row(
            "trace id with its leading zeros left out",
            "/api/v3/traces/{B_SHORT}",
            # up to 16 digits: the low half; 17 to 32: high and low (model.TraceIDFromString)
            Answer(200, JSON, traces("B")),
            "apiv3/http_gateway.go TraceIDFromString",
        ),
        Row(
            "unknown trace",
            "/api/v3/traces/00000000000000000000000000000abc",
            # returnTraces: no trace -> 404 GRPCGatewayError "No traces found" through http.Error
            Answer(404, TEXT, error(404, "No traces found", exact=True)),
            "apiv3/http_gateway.go returnTraces",
        ),
        Row(
            "bad trace id",
            "/api/v3/traces/not-a-trace-id",
            # tryParamError -> 400 "malformed parameter trace_id: ..."
            Answer(400, TEXT, error(400, "malformed parameter trace_id: ")),
            "apiv3/http_gateway.go getTrace, tryParamError",
        ),
        Row(
            "trace id longer than 32 hex digits",
            "/api/v3/traces/{A}0",
            Answer(400, TEXT, error(400, "malformed parameter trace_id: ")),
            "apiv3/http_gateway.go TraceIDFromString",
        ),
        Row(
            "base64 trace id (standard, padded)",
            "/api/v3/traces/{A64}",
            # TraceIDFromString: not hex -> standard, URL-safe, unpadded base64 of 8 or 16 bytes
            Answer(200, JSON, traces("A", resources=A_RESOURCES)),
            "apiv3/http_gateway.go TraceIDFromString",
        ),
        Row(
            "base64 trace id (URL-safe, unpadded)",
            "/api/v3/traces/{A64URL}",
            Answer(200, JSON, traces("A")),
            "apiv3/http_gateway.go TraceIDFromString",
        ),
        Row(
            "base64 that is not 8 or 16 bytes",
            "/api/v3/traces/zzzz",  # not hex; base64 of 3 bytes
            Answer(400, TEXT, error(400, "malformed parameter trace_id: ")),
            "apiv3/http_gateway.go TraceIDFromString (model.TraceIDFromBytes)",
        ),
        Row(
            "malformed startTime on a trace",
            "/api/v3/traces/{A}?startTime=yesterday",
            Answer(400, TEXT, error(400, "malformed parameter startTime: ")),
            "apiv3/http_gateway.go getTrace",
        ),
        Row(
            "malformed start_time on a trace: the error names the spelling sent",
            "/api/v3/traces/{A}?start_time=yesterday",
            Answer(400, TEXT, error(400, "malformed parameter start_time: ")),
            "apiv3/http_gateway.go getTrace (getQueryParam returns the name it read)",
        ),
        Row(
            "malformed endTime on a trace",
            "/api/v3/traces/{A}?endTime=tomorrow",
            Answer(400, TEXT, error(400, "malformed parameter endTime: ")),
            "apiv3/http_gateway.go getTrace",
        ),
        Row(
            "malformed rawTraces on a trace",
            "/api/v3/traces/{A}?rawTraces=perhaps",
            Answer(400, TEXT, error(400, "malformed parameter rawTraces: ")),
            "apiv3/http_gateway.go getTrace",
        ),
        Row(
            "malformed raw_traces on a trace",
            "/api/v3/traces/{A}?raw_traces=perhaps",
            Answer(400, TEXT, error(400, "malformed parameter raw_traces: ")),
            "apiv3/http_gateway.go getTrace",
        ),
        Row(
            "a time window on a trace is parsed, and the memory store ignores it",
            "/api/v3/traces/{A}?startTime=2001-01-01T00:00:00Z&endTime=2001-01-02T00:00:00Z",
            Answer(200, JSON, traces("A")),
            "apiv3/http_gateway.go getTrace; memory/tenant.go getTraces (by id only)",
            both_spellings=True,
        ),
        # ---------------------------------------------------------------------- GET /api/v3/traces
        Row(
            "search: most recently received trace first, not latest span start",
            "/api/v3/traces?" + WINDOW,
            # memory/tenant.go findTraceAndIds walks the ring buffer from mostRecent backwards; a trace's
            # later batches join its slot (storeTraces), they do not move it
            Answer(200, JSON, traces("C", "B", "A")),
            "memory/tenant.go findTraceAndIds, storeTraces",
            both_spellings=True,
        ),
        Row(
            "search: the service name is optional",
            "/api/v3/traces?query.operationName=validate&" + WINDOW,
            Answer(200, JSON, traces("A", resources=A_RESOURCES)),
            "apiv3/query_parser.go parseFindTracesQuery; memory/tenant.go validResource",
            both_spellings=True,
        ),
        Row(
            "search: the service and the operation must hold for the same span",
            "/api/v3/traces?query.serviceName=users&query.operationName=POST&" + WINDOW,
            Answer(404, TEXT, error(404, "No traces found", exact=True)),
            "memory/tenant.go validTrace, validSpan",
            both_spellings=True,
        ),
        Row(
            "search: a service",
            "/api/v3/traces?query.serviceName=users&" + WINDOW,
            Answer(200, JSON, traces("A")),
            "memory/tenant.go validResource",
            both_spellings=True,
        ),
        Row(
            "search: no match",
            "/api/v3/traces?query.serviceName=billing&" + WINDOW,
            Answer(404, TEXT, error(404, "No traces found", exact=True)),
            "apiv3/http_gateway.go returnTraces",
            both_spellings=True,
        ),
        Row(
            "search: the window is required",
            "/api/v3/traces?query.serviceName=gateway",
            Answer(
                400, TEXT, error(400, "query.startTimeMin and query.startTimeMax are required", exact=True)
            ),
            "apiv3/query_parser.go parseFindTracesQuery",
        ),
        Row(
            "search: an empty window (min = max) is refused",
            "/api/v3/traces?query.startTimeMin={min}&query.startTimeMax={min}",
            Answer(400, TEXT, error(400, "query.startTimeMin must be before query.startTimeMax", exact=True)),
            "apiv3/query_parser.go parseFindTracesQuery (!timeMin.Before(timeMax))",
            both_spellings=True,
        ),
        Row(
            "search: a reversed window is refused",
            "/api/v3/traces?query.startTimeMin={max}&query.startTimeMax={min}",
            Answer(400, TEXT, error(400, "query.startTimeMin must be before query.startTimeMax", exact=True)),
            "apiv3/query_parser.go parseFindTracesQuery",
        ),
        Row(
            "search: malformed time names the spelling sent",
            "/api/v3/traces?query.start_time_min=yesterday&query.startTimeMax={max}",
            Answer(400, TEXT, error(400, "malformed parameter query.start_time_min: ")),
            "apiv3/query_parser.go getQueryParam (returns the name it read)",
        ),
        Row(
            "search: span start on the window's edge is inside",
            "/api/v3/traces?query.serviceName=users&query.startTimeMin={A3_START}&query.startTimeMax={A3_START_1NS}",
            # validSpan: excluded only when start is Before(min) or After(max)
            Answer(200, JSON, traces("A")),
            "memory/tenant.go validSpan",
        ),
        Row(
            "search: durations bound the same span",
            "/api/v3/traces?query.durationMin=20ms&query.durationMax=30ms&" + WINDOW,
            # A3 lasts 25 ms; nothing else lies in [20 ms, 30 ms]
            Answer(200, JSON, traces("A")),
            "memory/tenant.go validSpan",
            both_spellings=True,
        ),
        Row(
            "search: durationMax 0 means no bound",
            "/api/v3/traces?query.durationMax=0s&" + WINDOW,
            Answer(200, JSON, traces("C", "B", "A")),
            "memory/tenant.go validSpan (DurationMax != 0)",
        ),
        Row(
            "search: malformed duration",
            "/api/v3/traces?query.durationMin=soon&" + WINDOW,
            Answer(400, TEXT, error(400, "malformed parameter query.durationMin: ")),
            "apiv3/query_parser.go parseFindTracesQuery",
        ),
        Row(
            "search: depth defaults to 100",
            "/api/v3/traces?query.serviceName=many&" + WINDOW,
            Answer(200, JSON, trace_count(100)),
            "apiv3/query_parser.go defaultSearchDepth",
            store="many",
        ),
        Row(
            "search: depth",
            "/api/v3/traces?query.searchDepth=3&" + WINDOW,
            Answer(200, JSON, trace_count(3)),
            "apiv3/query_parser.go parseFindTracesQuery",
            store="many",
            both_spellings=True,
        ),
        Row(
            "search: query.num_traces is an older alias of the depth",
            "/api/v3/traces?query.num_traces=2&" + WINDOW,
            Answer(200, JSON, trace_count(2)),
            "apiv3/query_parser.go paramNumTraces",
            store="many",
        ),
        Row(
            "search: the canonical depth wins over its aliases",
            "/api/v3/traces?query.searchDepth=2&query.search_depth=4&query.num_traces=5&" + WINDOW,
            Answer(200, JSON, trace_count(2)),
            "apiv3/query_parser.go getQueryParam",
            store="many",
        ),
        Row(
            "search: depth 0",
            "/api/v3/traces?query.searchDepth=0&" + WINDOW,
            # the parser accepts any integer; the memory store then fails the search with a plain error,
            # which the gateway answers as 500
            Answer(
                500, TEXT, error(500, "search depth must be greater than 0 and less than max traces", True)
            ),
            "apiv3/query_parser.go; memory/tenant.go findTraceAndIds (errInvalidSearchDepth)",
            ours=Answer(
                400, TEXT, error(400, "malformed parameter query.searchDepth: must be greater than 0")
            ),
            why="bad input gets a 4xx that names the parameter, never a 500",
        ),
        Row(
            "search: negative depth",
            "/api/v3/traces?query.searchDepth=-1&" + WINDOW,
            Answer(
                500, TEXT, error(500, "search depth must be greater than 0 and less than max traces", True)
            ),
            "memory/tenant.go findTraceAndIds",
            ours=Answer(
                400, TEXT, error(400, "malformed parameter query.searchDepth: must be greater than 0")
            ),
            why="bad input gets a 4xx that names the parameter, never a 500",
        ),
        Row(
            "search: depth above the memory store's max_traces (100000 in the all-in-one image)",
            "/api/v3/traces?query.searchDepth=100001&" + WINDOW,
            Answer(
                500, TEXT, error(500, "search depth must be greater than 0 and less than max traces", True)
            ),
            "memory/tenant.go findTraceAndIds; cmd/jaeger/internal/all-in-one.yaml (max_traces: 100000)",
            store="many",
            ours=Answer(200, JSON, trace_count(MANY_TRACES)),
            why="the store keeps no trace count limit of its own (retention prunes by age and span count)",
        ),
        Row(
            "search: malformed depth",
            "/api/v3/traces?query.searchDepth=many&" + WINDOW,
            Answer(400, TEXT, error(400, "malformed parameter query.searchDepth: ")),
            "apiv3/query_parser.go parseFindTracesQuery (strconv.Atoi)",
        ),
        # ------------------------------------------------------------------------- query.attributes
        Row(
            "attributes: a span attribute",
            '/api/v3/traces?query.attributes={"http.route":"/api/users"}&' + WINDOW,
            Answer(200, JSON, traces("A")),
            "apiv3/query_parser.go paramAttributes; memory/tenant.go validSpan, findKeyValInTrace",
        ),
        Row(
            "attributes: values compare as text (an int attribute)",
            '/api/v3/traces?query.attributes={"http.response.status_code":"409"}&' + WINDOW,
            Answer(200, JSON, traces("A")),
            "memory/tenant.go matchAttributes (Value.AsString)",
        ),
        Row(
            "attributes: an event attribute",
            '/api/v3/traces?query.attributes={"user.email":"ada@example.com"}&' + WINDOW,
            Answer(200, JSON, traces("A")),
            "memory/tenant.go findKeyValInTrace (span, scope, resource, events, links)",
        ),
        Row(
            "attributes: a resource attribute, plain",
            '/api/v3/traces?query.attributes={"host.name":"box"}&' + WINDOW,
            Answer(200, JSON, traces("C")),
            "memory/tenant.go findKeyValInTrace",
        ),
        Row(
            "attributes: resource.<key> reads the resource only",
            '/api/v3/traces?query.attributes={"resource.deployment.environment":"parity"}&' + WINDOW,
            Answer(200, JSON, traces("B", "A")),
            "memory/tenant.go validSpan (resource. prefix)",
        ),
        Row(
            "attributes: every pair on the same span",
            '/api/v3/traces?query.attributes={"http.route":"/api/users","http.request.method":"POST"}&'
            + WINDOW,
            Answer(404, TEXT, error(404, "No traces found", exact=True)),
            "memory/tenant.go validSpan",
        ),
        Row(
            "attributes: error=true is status ERROR",
            '/api/v3/traces?query.attributes={"error":"true"}&' + WINDOW,
            Answer(200, JSON, traces("A")),
            "memory/tenant.go validSpan (errorAttribute)",
        ),
        Row(
            "attributes: error=false is status OK (not unset)",
            '/api/v3/traces?query.attributes={"error":"false"}&' + WINDOW,
            Answer(200, JSON, traces("B")),
            "memory/tenant.go validSpan (errorAttribute)",
        ),
        Row(
            "attributes: span.kind",
            '/api/v3/traces?query.attributes={"span.kind":"client"}&' + WINDOW,
            Answer(200, JSON, traces("A")),
            "memory/tenant.go validSpan, spanKindFromString",
        ),
        Row(
            "attributes: span.status",
            '/api/v3/traces?query.attributes={"span.status":"OK"}&' + WINDOW,
            Answer(200, JSON, traces("B")),
            "memory/tenant.go validSpan, spanStatusFromString",
        ),
        Row(
            "attributes: scope.name",
            '/api/v3/traces?query.serviceName=gateway&query.attributes={"scope.name":"manual"}&' + WINDOW,
            Answer(200, JSON, traces("A")),
            "memory/tenant.go validSpan",
        ),
        Row(
            "attributes: not a JSON object of strings",
            '/api/v3/traces?query.attributes={"http.response.status_code":409}&' + WINDOW,
            Answer(400, TEXT, error(400, "malformed parameter query.attributes: ")),
            "apiv3/query_parser.go parseFindTracesQuery (json.Unmarshal into map[string]string)",
        ),
        # ------------------------------------------------------------------- GET /api/v3/trace-summaries
        Row(
            "summaries: one per trace, in search order",
            "/api/v3/trace-summaries?query.serviceName=users&" + WINDOW,
            Answer(200, JSON, summaries(summary_a(t0))),
            "apiv3/http_gateway.go findTraceSummaries; querysvc/summary.go summarizeTrace",
            both_spellings=True,
        ),
        Row(
            "summaries: a trace without a root and without service.name",
            '/api/v3/trace-summaries?query.attributes={"host.name":"box"}&' + WINDOW,
            Answer(
                200,
                JSON,
                summaries(
                    {
                        "traceId": TRACE_IDS["C"],
                        "minStartTimeUnixNano": str(t0 + 150 * MS),
                        "maxEndTimeUnixNano": str(t0 + 160 * MS),
                        "spanCount": 1,
                        "orphanSpanCount": 1,
                        "services": [{"spanCount": 1}],
                    }
                ),
            ),
            "querysvc/summary.go summarizeTrace; apiv3/grpc_handler.go toProtoTraceSummaries",
        ),
        Row(
            "summaries: no match is an empty answer, not a 404",
            "/api/v3/trace-summaries?query.serviceName=billing&" + WINDOW,
            Answer(200, JSON, exactly({})),
            "apiv3/http_gateway.go findTraceSummaries (jsonpb omits the empty list)",
        ),
        Row(
            "summaries: the same parameter checks as the search",
            "/api/v3/trace-summaries?query.startTimeMin={max}&query.startTimeMax={min}",
            Answer(400, TEXT, error(400, "query.startTimeMin must be before query.startTimeMax", exact=True)),
            "apiv3/http_gateway.go findTraceSummaries -> parseFindTracesQuery",
        ),
        Row(
            "summaries: POST is not a route (GET only); the /api/ fallback answers",
            "/api/v3/trace-summaries?" + WINDOW,
            Answer(404, TEXT, plain("404 page not found\n")),
            "apiv3/http_gateway.go RegisterRoutes (MethodGet); server.go initRouter (/api/ -> 404)",
            method="POST",
        ),
        # ------------------------------------------------------------------------ services, operations
        Row(
            "services: resources without service.name are skipped",
            "/api/v3/services",
            Answer(200, JSON, services("gateway", "users")),
            'memory/tenant.go storeTraces (serviceName != "")',
        ),
        Row(
            "services: none yet",
            "/api/v3/services",
            # services == [] -> GetServicesResponse marshalled by jsonpb, which omits an empty list
            Answer(200, JSON, exactly({})),
            "apiv3/http_gateway.go getServices, marshalResponse",
            store="empty",
        ),
        Row(
            "operations: unspecified kind is reported as internal",
            "/api/v3/operations?service=gateway",
            # stored with SpanKind "" (memory/tenant.go fromOTELSpanKind); the gateway writes "" as internal
            Answer(
                200,
                JSON,
                operations(
                    ("GET /healthz", "server"),
                    ("POST", "client"),
                    ("POST /api/users", "server"),
                    ("validate", "internal"),
                    ("validate", "internal"),
                ),
            ),
            "apiv3/http_gateway.go getOperations; memory/tenant.go fromOTELSpanKind",
        ),
        Row(
            "operations: the kind filter compares the raw stored kind",
            "/api/v3/operations?service=gateway&spanKind=internal",
            # the unspecified "validate" is stored as "" and does not match "internal"
            Answer(200, JSON, operations(("validate", "internal"))),
            "memory/memory.go GetOperations",
            both_spellings=True,
        ),
        Row(
            "operations: the kind filter is case-sensitive",
            "/api/v3/operations?service=gateway&spanKind=SERVER",
            Answer(200, JSON, exactly({})),
            "memory/memory.go GetOperations",
        ),
        Row(
            "operations: unknown service",
            "/api/v3/operations?service=billing",
            Answer(200, JSON, exactly({})),
            "apiv3/http_gateway.go getOperations (jsonpb omits the empty list)",
        ),
        # ------------------------------------------------------------------------------------ routing
        Row(
            "an unknown path under /api/",
            "/api/v3/dependencies",
            Answer(404, TEXT, plain("404 page not found\n")),
            "server.go initRouter (apiNotFoundPattern)",
        ),
        Row(
            "a trailing slash is another path",
            "/api/v3/services/",
            Answer(404, TEXT, plain("404 page not found\n")),
            "server.go initRouter (exact patterns; /api/ catches the rest)",
        ),
    ]
