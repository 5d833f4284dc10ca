"""The query API client: parsing Jaeger's OTLP/JSON, and the calls against a real (local) store."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Tracer

from tracehop.stack.config import free_port
from tracehop.traces.query import (
    QueryAPIError,
    Span,
    TraceQuery,
    TraceSummary,
    format_rfc3339,
    group_by_trace,
    search_params,
    spans_from_otlp_json,
)
from tracehop.traces.store.server import RunningTraceStore, serve_in_thread
from tracehop.traces.tree import assert_trace_tree

# What Jaeger 2.x answers for GET /api/v3/traces/{id}: defaults omitted (no parentSpanId on the root, no
# kind 0), integer enums, int64 as strings.
JAEGER_TRACE = {
    "result": {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "gateway"}},
                        {"key": "deployment.environment", "value": {"stringValue": "local"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "opentelemetry.instrumentation.flask"},
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "name": "POST /api/users",
                                "kind": 2,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000050000000",
                                "attributes": [
                                    {"key": "http.response.status_code", "value": {"intValue": "201"}},
                                    {"key": "ratio", "value": {"doubleValue": 0.25}},
                                    {"key": "retried", "value": {"boolValue": False}},
                                    {
                                        "key": "hosts",
                                        "value": {
                                            "arrayValue": {
                                                "values": [{"stringValue": "a"}, {"intValue": "2"}]
                                            }
                                        },
                                    },
                                    {
                                        "key": "nested",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [{"key": "k", "value": {"stringValue": "v"}}]
                                            }
                                        },
                                    },
                                    {
                                        "key": "raw",
                                        "value": {"bytesValue": base64.b64encode(b"\x00\x01").decode()},
                                    },
                                ],
                                "events": [
                                    {
                                        "timeUnixNano": "1700000000010000000",
                                        "name": "exception",
                                        "attributes": [
                                            {"key": "exception.type", "value": {"stringValue": "E"}}
                                        ],
                                    }
                                ],
                                "status": {"code": 2, "message": "boom"},
                            },
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b175",
                                "parentSpanId": "eee19b7ec3c1b174",
                                "name": "internal work",
                                "startTimeUnixNano": "1700000000001000000",
                                "endTimeUnixNano": "1700000000002000000",
                                "links": [
                                    {
                                        "traceId": "0af7651916cd43dd8448eb211c80319c",
                                        "spanId": "b7ad6b7169203331",
                                    }
                                ],
                                "status": {},
                            },
                        ],
                    }
                ],
            }
        ]
    }
}


def test_jaeger_json_becomes_flat_spans() -> None:
    root, child = spans_from_otlp_json(JAEGER_TRACE)

    assert (root.trace_id, root.span_id, root.parent_span_id) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "",
    )
    assert (root.kind, root.service, root.status_code, root.status_message) == (
        "SERVER",
        "gateway",
        "ERROR",
        "boom",
    )
    assert (root.start_ns, root.duration_ns) == (1_700_000_000_000_000_000, 50_000_000)
    assert root.resource == {"service.name": "gateway", "deployment.environment": "local"}
    assert root.events == [("exception", {"exception.type": "E"}, 1_700_000_000_010_000_000)]
    # An omitted kind is SPAN_KIND_UNSPECIFIED, which OpenTelemetry treats as INTERNAL.
    assert (child.kind, child.status_code, child.parent_span_id) == ("INTERNAL", "UNSET", "eee19b7ec3c1b174")
    assert child.links == [("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")]


def test_attribute_values_become_python_values() -> None:
    (root, _) = spans_from_otlp_json(JAEGER_TRACE)

    assert root.attributes == {
        "http.response.status_code": 201,
        "ratio": 0.25,
        "retried": False,
        "hosts": ["a", 2],
        "nested": {"k": "v"},
        "raw": b"\x00\x01",
    }


def test_enum_names_and_base64_ids_from_other_encoders_are_understood() -> None:
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": base64.b64encode(
                                    bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
                                ).decode(),
                                "spanId": "B7AD6B7169203331",
                                "name": "apply_async/send_welcome_email",
                                "kind": "SPAN_KIND_PRODUCER",
                                "status": {"code": "STATUS_CODE_OK"},
                            }
                        ]
                    }
                ]
            }
        ]
    }

    (span,) = spans_from_otlp_json(document)

    assert (span.trace_id, span.span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    assert (span.kind, span.status_code, span.service) == ("PRODUCER", "OK", "")


def test_group_by_trace_puts_the_most_recent_trace_first() -> None:
    def span(trace_id: str, start_ns: int) -> Span:
        return Span(trace_id, f"{start_ns:016x}", "", "n", "SERVER", "gateway", start_ns, start_ns + 1)

    grouped = group_by_trace([span("a" * 32, 10), span("b" * 32, 30), span("a" * 32, 40), span("c" * 32, 20)])

    assert list(grouped) == ["b" * 32, "c" * 32, "a" * 32]
    assert [s.start_ns for s in grouped["a" * 32]] == [10, 40]


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 600, tzinfo=UTC), "2026-01-02T03:04:05.000600Z"),
        (datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))), "2026-01-02T03:04:05.000000Z"),
        (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05.000000Z"),
    ],
)
def test_search_times_are_sent_as_rfc3339_utc(moment: datetime, text: str) -> None:
    assert format_rfc3339(moment) == text


# -------------------------------------------------------------------------------------- against a store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunningTraceStore]:
    with serve_in_thread(db_path=tmp_path / "traces.sqlite3") as running:
        yield running


@pytest.fixture
def tracer(store: RunningTraceStore) -> Iterator[Tracer]:
    session = requests.Session()
    session.trust_env = False
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=store.traces_url, session=session))
    )
    yield provider.get_tracer("tests")
    provider.shutdown()


def test_get_trace_of_an_unknown_trace_is_none(store: RunningTraceStore) -> None:
    assert TraceQuery(store.query_url).get_trace("ab" * 16) is None


def test_an_unexpected_status_raises_with_the_backends_message(store: RunningTraceStore) -> None:
    with pytest.raises(QueryAPIError, match="400: .*malformed parameter trace_id"):
        TraceQuery(store.query_url).get_trace("not-a-trace-id")


def test_search_returns_traces_by_id_most_recent_first(store: RunningTraceStore, tracer: Tracer) -> None:
    now = time.time_ns()
    ids = []
    for offset_ms, name in ((0, "GET /api/users/<id>"), (10, "POST /api/users"), (20, "POST /api/users")):
        span = tracer.start_span(name, kind=SpanKind.SERVER, start_time=now + offset_ms * 1_000_000)
        span.end(end_time=now + (offset_ms + 1) * 1_000_000)
        ids.append(format(span.get_span_context().trace_id, "032x"))
    query = TraceQuery(store.query_url)
    start = datetime.fromtimestamp(now / 1e9, UTC) - timedelta(seconds=1)
    end = start + timedelta(seconds=5)

    assert list(query.search("gateway", start, end)) == ids[::-1]
    assert list(query.search("gateway", start, end, limit=1)) == [ids[2]]
    found = query.search("gateway", start, end, operation="GET /api/users/<id>")
    assert list(found) == [ids[0]] and found[ids[0]][0].name == "GET /api/users/<id>"
    assert query.search("users", start, end) == {}
    assert query.services() == ["gateway"]
    assert query.operations("gateway") == [("GET /api/users/<id>", "server"), ("POST /api/users", "server")]


def test_search_by_attributes_any_service_and_summaries(store: RunningTraceStore, tracer: Tracer) -> None:
    now = time.time_ns()
    with tracer.start_as_current_span("GET /a", kind=SpanKind.SERVER, start_time=now) as first:
        first.set_attribute("http.route", "/a")
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT) as child:
            child.set_status(trace.Status(trace.StatusCode.ERROR))
    with tracer.start_as_current_span("GET /b", kind=SpanKind.SERVER, start_time=now + 1_000_000) as second:
        second.set_attribute("http.route", "/b")
    first_id, second_id = (format(s.get_span_context().trace_id, "032x") for s in (first, second))
    query = TraceQuery(store.query_url)
    start = datetime.fromtimestamp(now / 1e9, UTC) - timedelta(seconds=1)
    end = start + timedelta(seconds=5)

    # The most recently received trace first; no service named: every service.
    assert list(query.search(None, start, end)) == [second_id, first_id]
    assert list(query.search(None, start, end, attributes={"http.route": "/a"})) == [first_id]
    assert list(query.search("gateway", start, end, attributes={"error": "true"})) == [first_id]
    assert query.search(None, start, end, attributes={"http.route": "/a", "span.kind": "client"}) == {}

    summaries = query.trace_summaries(None, start, end)
    assert [summary.trace_id for summary in summaries] == [second_id, first_id]
    assert (summaries[1].span_count, summaries[1].error_span_count) == (2, 1)
    assert (summaries[1].root_service, summaries[1].root_operation) == ("gateway", "GET /a")
    assert summaries[1].services == {"gateway": (2, 1)}
    assert query.trace_summaries("billing", start, end) == []
    assert query.operations("gateway", span_kind="client") == [("SELECT", "client")]


def test_wait_for_trace_polls_until_the_condition_holds(store: RunningTraceStore, tracer: Tracer) -> None:
    with tracer.start_as_current_span("POST /api/users", kind=SpanKind.SERVER) as root:
        pass
    trace_id = format(root.get_span_context().trace_id, "032x")
    polls = []

    def two_spans(spans: list[Span]) -> bool:
        # The second span is exported only after the first poll saw one: waiting is really exercised.
        polls.append(len(spans))
        if len(polls) == 1:
            child = tracer.start_span("POST", kind=SpanKind.CLIENT, context=trace.set_span_in_context(root))
            child.end()
        return len(spans) == 2

    spans = TraceQuery(store.query_url).wait_for_trace(trace_id, until=two_spans, timeout=5, interval=0.01)

    assert polls == [1, 2]
    assert_trace_tree(spans, "gateway  SERVER  POST /api/users\n└─ gateway  CLIENT  POST")


def test_wait_for_trace_timeout_shows_what_it_had(store: RunningTraceStore, tracer: Tracer) -> None:
    with tracer.start_as_current_span("POST /api/users", kind=SpanKind.SERVER) as root:
        pass
    trace_id = format(root.get_span_context().trace_id, "032x")

    with pytest.raises(TimeoutError) as raised:
        TraceQuery(store.query_url).wait_for_trace(
            trace_id, until=lambda s: len(s) > 5, timeout=0.2, interval=0.05
        )

    message = str(raised.value)
    assert f"trace {trace_id}: condition not met after 0.2 s" in message
    assert "last seen 1 span(s):\ngateway   SERVER    POST /api/users" in message


def test_wait_for_trace_timeout_on_a_missing_trace_says_so(store: RunningTraceStore) -> None:
    with pytest.raises(TimeoutError, match="the backend returned no spans"):
        TraceQuery(store.query_url).wait_for_trace("ab" * 16, timeout=0.1, interval=0.05)


def test_wait_for_trace_tolerates_a_backend_that_is_not_up_yet() -> None:
    with pytest.raises(TimeoutError, match="last error: .*Connection"):
        TraceQuery(f"http://127.0.0.1:{free_port()}").wait_for_trace("ab" * 16, timeout=0.2, interval=0.05)


# ---------------------------------------------------------------------------- the names the client sends

# The canonical names of Jaeger's query API v3 since 2.19 (apiv3/query_parser.go, the camelCase block);
# the snake_case spellings are its deprecated aliases.
CANONICAL_SEARCH_NAMES = {
    "query.serviceName",
    "query.operationName",
    "query.startTimeMin",
    "query.startTimeMax",
    "query.searchDepth",
    "query.attributes",
}


def test_search_params_use_the_canonical_camel_case_names() -> None:
    start = datetime(2026, 1, 2, 15, 4, 5, 123456, tzinfo=UTC)
    params = search_params(
        "gateway", start, start + timedelta(minutes=1), 7, "POST /api/users", {"http.route": "/api/users"}
    )

    assert set(params) == CANONICAL_SEARCH_NAMES
    assert params["query.startTimeMin"] == "2026-01-02T15:04:05.123456Z"
    assert params["query.searchDepth"] == "7"
    # Jaeger decodes query.attributes as a JSON object of strings.
    assert json.loads(params["query.attributes"]) == {"http.route": "/api/users"}


def test_search_params_leave_out_what_is_not_asked() -> None:
    start = datetime(2026, 1, 2, tzinfo=UTC)
    params = search_params(None, start, start + timedelta(minutes=1), 20)
    assert set(params) == {"query.startTimeMin", "query.startTimeMax", "query.searchDepth"}


def test_trace_summary_reads_jaegers_snapshot() -> None:
    # apiv3/snapshots/FindTraceSummaries.json at Jaeger v2.20.0.
    item = {
        "errorSpanCount": 1,
        "maxEndTimeUnixNano": "1001000000000",
        "minStartTimeUnixNano": "1000000000000",
        "rootOperationName": "HTTP GET /",
        "rootServiceName": "frontend",
        "services": [{"errorSpanCount": 1, "name": "frontend", "spanCount": 2}],
        "spanCount": 2,
        "traceId": "00000000000000000000000000000001",
    }
    summary = TraceSummary.from_json(item)
    assert summary.trace_id == "0" * 31 + "1"
    assert (summary.start_ns, summary.end_ns) == (1_000_000_000_000, 1_001_000_000_000)
    assert (summary.span_count, summary.error_span_count, summary.orphan_span_count) == (2, 1, 0)
    assert summary.services == {"frontend": (2, 1)}
    assert (summary.root_service, summary.root_operation) == ("frontend", "HTTP GET /")
