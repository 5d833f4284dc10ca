"""The local trace store, in-process on free ports: real OTLP exports in, Jaeger-shaped JSON out."""

from __future__ import annotations

import gc
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ResourceProto
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, StatusCode, Tracer

from tests.conftest import REPO_ROOT
from tracehop.stack.config import free_port
from tracehop.traces.query import TraceQuery
from tracehop.traces.store.otlp import parse_otlp_json
from tracehop.traces.store.server import RunningTraceStore, serve_in_thread
from tracehop.traces.tree import assert_trace_tree

HOUR_AGO_NS = (time.time_ns() - 3600 * 10**9) // 10**9 * 10**9  # whole second: exact RFC 3339 bounds
MS = 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunningTraceStore]:
    with serve_in_thread(db_path=tmp_path / "traces.sqlite3") as running:
        yield running


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTraceStore]:
    """One store for the tests that only check answers: none of them reads what another one stored."""
    with serve_in_thread(db_path=tmp_path_factory.mktemp("shared") / "traces.sqlite3") as running:
        yield running


@pytest.fixture
def tracer_for(store: RunningTraceStore, http: requests.Session) -> Iterator[Callable[..., Tracer]]:
    """tracer_for("gateway") -> a tracer whose spans are exported (synchronously) to the store."""
    providers: list[TracerProvider] = []

    def tracer_for(service: str, compression: Compression = Compression.NoCompression) -> Tracer:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(
            endpoint=store.traces_url, session=http, compression=compression, timeout=5
        )
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
        return provider.get_tracer("tests")

    yield tracer_for
    for provider in providers:
        provider.shutdown()


def trace_id_of(span) -> str:
    return format(span.get_span_context().trace_id, "032x")


def rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


# --------------------------------------------------------------------------------------- OTLP protobuf in


def test_exported_spans_come_back_as_the_exact_tree(store: RunningTraceStore, tracer_for) -> None:
    gateway, users, worker = tracer_for("gateway"), tracer_for("users"), tracer_for("worker")
    # Nested on purpose: each `with` is one level of the tree below.
    with gateway.start_as_current_span("POST /api/users", kind=SpanKind.SERVER) as root:
        with gateway.start_as_current_span("POST", kind=SpanKind.CLIENT):  # noqa: SIM117
            with users.start_as_current_span("POST /users", kind=SpanKind.SERVER):
                with users.start_as_current_span("auth_check"):
                    pass
                with users.start_as_current_span("HSET", kind=SpanKind.CLIENT):
                    pass
        with gateway.start_as_current_span("apply_async/send_welcome_email", kind=SpanKind.PRODUCER):  # noqa: SIM117
            with worker.start_as_current_span("run/send_welcome_email", kind=SpanKind.CONSUMER):
                pass

    spans = TraceQuery(store.query_url).get_trace(trace_id_of(root))

    assert_trace_tree(
        spans,
        """
        gateway   SERVER    POST /api/users
        ├─ gateway  CLIENT    POST
        │  └─ users   SERVER    POST /users
        │     ├─ users  INTERNAL  auth_check
        │     └─ users  CLIENT    HSET
        └─ gateway  PRODUCER  apply_async/send_welcome_email
           └─ worker  CONSUMER  run/send_welcome_email
        """,
    )


def test_span_details_survive_the_round_trip(store: RunningTraceStore, tracer_for) -> None:
    tracer = tracer_for("worker")
    with tracer.start_as_current_span("linked") as linked:
        pass
    with tracer.start_as_current_span(
        "run/send_welcome_email", links=[Link(linked.get_span_context())]
    ) as span:
        span.set_attributes(
            {"celery.task_name": "send", "retries": 2, "ratio": 0.5, "ok": True, "tags": ["a"]}
        )
        span.add_event("retry", {"attempt": 1}, timestamp=HOUR_AGO_NS)
        span.set_status(StatusCode.ERROR, "SMTP 451 greylisted")

    (got,) = TraceQuery(store.query_url).get_trace(trace_id_of(span))

    assert got.attributes == {
        "celery.task_name": "send",
        "retries": 2,
        "ratio": 0.5,
        "ok": True,
        "tags": ["a"],
    }
    assert got.events == [("retry", {"attempt": 1}, HOUR_AGO_NS)]
    assert got.links == [(trace_id_of(linked), format(linked.get_span_context().span_id, "016x"))]
    assert (got.status_code, got.status_message) == ("ERROR", "SMTP 451 greylisted")
    assert got.resource["service.name"] == "worker" and got.resource["telemetry.sdk.language"] == "python"
    assert (got.start_ns, got.end_ns) == (span.start_time, span.end_time)


def test_gzip_compressed_export_is_accepted(store: RunningTraceStore, tracer_for) -> None:
    tracer = tracer_for("gateway", compression=Compression.Gzip)
    with tracer.start_as_current_span("GET /healthz", kind=SpanKind.SERVER) as span:
        pass

    assert_trace_tree(
        TraceQuery(store.query_url).get_trace(trace_id_of(span)), "gateway  SERVER  GET /healthz"
    )


def test_a_span_exported_twice_is_stored_once(store: RunningTraceStore, http: requests.Session) -> None:
    body = _request(_span(b"\x01" * 16, b"\x02" * 8, "once")).SerializeToString()
    for _ in range(2):
        assert _post(http, store, body, "application/x-protobuf").status_code == 200

    assert len(TraceQuery(store.query_url).get_trace("01" * 16)) == 1


def test_protobuf_success_answer_is_an_export_response(
    shared_store: RunningTraceStore, http: requests.Session
) -> None:
    response = _post(http, shared_store, _request(_span(b"\x01" * 16, b"\x02" * 8)).SerializeToString())

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-protobuf"
    assert ExportTraceServiceResponse.FromString(response.content) == ExportTraceServiceResponse()


def test_stored_otlp_is_rebuilt_exactly(store: RunningTraceStore, http: requests.Session) -> None:
    span = _span(bytes(range(16)), bytes(range(8)), "exact", parent=bytes(range(1, 9)))
    span.attributes.add(key="big", value=AnyValue(int_value=2**62))
    span.links.add(trace_id=b"\xaa" * 16, span_id=b"\xbb" * 8)
    sent = _request(span)
    sent.resource_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0"
    _post(http, store, sent.SerializeToString())

    document = http.get(f"{store.query_url}/api/v3/traces/{bytes(range(16)).hex()}").json()

    assert parse_otlp_json(json.dumps(document["result"]).encode()) == sent


# ------------------------------------------------------------------------------------------ OTLP/JSON in


def otlp_json_body() -> dict:
    """A hand-written OTLP/JSON export: upper-case hex ids, enums as names and numbers, int64 both ways."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "users"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "name": "GET /users/<id>",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": str(HOUR_AGO_NS),
                                "endTimeUnixNano": HOUR_AGO_NS + 5 * MS,
                                "attributes": [
                                    {"key": "http.response.status_code", "value": {"intValue": 200}},
                                    {"key": "user.count", "value": {"intValue": "9007199254740993"}},
                                ],
                                "status": {"code": "STATUS_CODE_ERROR", "message": "boom"},
                            },
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B175",
                                "parentSpanId": "EEE19B7EC3C1B174",
                                "name": "HGETALL",
                                "kind": 3,
                                "startTimeUnixNano": HOUR_AGO_NS + 1 * MS,
                                "endTimeUnixNano": str(HOUR_AGO_NS + 2 * MS),
                                "links": [
                                    {
                                        "traceId": "0AF7651916CD43DD8448EB211C80319C",
                                        "spanId": "B7AD6B7169203331",
                                    }
                                ],
                                "futureField": {"ignored": True},
                            },
                        ],
                    }
                ],
            },
            {
                # Same service, another resource (a second process): Jaeger keeps it a separate entry.
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "users"}},
                        {"key": "process.pid", "value": {"intValue": "4242"}},
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b176",
                                "parentSpanId": "eee19b7ec3c1b174",
                                "name": "serialize",
                                "kind": 1,
                                "startTimeUnixNano": HOUR_AGO_NS + 3 * MS,
                                "endTimeUnixNano": HOUR_AGO_NS + 4 * MS,
                            }
                        ]
                    }
                ],
            },
        ]
    }


def test_otlp_json_export_is_stored_with_hex_ids(store: RunningTraceStore, http: requests.Session) -> None:
    response = _post(http, store, json.dumps(otlp_json_body()).encode(), "application/json; charset=utf-8")

    assert (response.status_code, response.headers["Content-Type"]) == (200, "application/json")
    assert response.json() == {}
    spans = TraceQuery(store.query_url).get_trace("5b8efff798038103d269b633813fc60c")
    assert_trace_tree(
        spans,
        """
        users   SERVER    GET /users/<id>
        ├─ users  CLIENT    HGETALL
        └─ users  INTERNAL  serialize
        """,
    )
    by_name = {span.name: span for span in spans}
    assert by_name["HGETALL"].links == [("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")]
    assert by_name["GET /users/<id>"].attributes == {
        "http.response.status_code": 200,
        "user.count": 9007199254740993,
    }
    assert (by_name["GET /users/<id>"].start_ns, by_name["HGETALL"].end_ns) == (
        HOUR_AGO_NS,
        HOUR_AGO_NS + 2 * MS,
    )


def test_store_process_freezes_its_startup_heap(tmp_path: Path, http: requests.Session) -> None:
    """The store's own process (`run`) moves its start-up objects out of the collector's reach once the
    viewer is built (server.py, RunningTraceStore), and goes on storing spans afterwards."""
    assert gc.get_freeze_count() == 0, "something else froze this test process's heap"
    try:
        with serve_in_thread(db_path=tmp_path / "traces.sqlite3", freeze_heap=True) as store:
            deadline = time.monotonic() + 30
            while gc.get_freeze_count() == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            # The viewer's modules (Flask, Jinja) are imported by then: far more than the test's own.
            assert gc.get_freeze_count() > 10_000
            response = _post(http, store, json.dumps(otlp_json_body()).encode(), "application/json")
            assert response.status_code == 200
            assert len(TraceQuery(store.query_url).get_trace("5b8efff798038103d269b633813fc60c")) == 3
    finally:
        gc.unfreeze()  # the rest of the test run collects as usual


def test_trace_json_has_jaegers_shape(store: RunningTraceStore, http: requests.Session) -> None:
    _post(http, store, json.dumps(otlp_json_body()).encode(), "application/json")

    response = http.get(f"{store.query_url}/api/v3/traces/5b8efff798038103d269b633813fc60c")

    assert response.status_code == 200
    resource_spans = response.json()["result"]["resourceSpans"]
    assert len(resource_spans) == 2  # one entry per distinct resource, even of the same service
    root, client = resource_spans[0]["scopeSpans"][0]["spans"]
    assert resource_spans[0]["scopeSpans"][0]["scope"] == {"name": "manual"}
    assert (root["traceId"], root["spanId"]) == ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174")
    assert "parentSpanId" not in root  # Jaeger omits empty fields
    assert client["parentSpanId"] == "eee19b7ec3c1b174"
    assert client["links"] == [{"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331"}]
    assert (root["kind"], client["kind"]) == (2, 3)
    assert root["status"] == {"code": 2, "message": "boom"}
    assert root["startTimeUnixNano"] == str(HOUR_AGO_NS) and isinstance(client["endTimeUnixNano"], str)
    assert root["attributes"][0] == {"key": "http.response.status_code", "value": {"intValue": "200"}}
    assert resource_spans[1]["resource"]["attributes"][1] == {
        "key": "process.pid",
        "value": {"intValue": "4242"},
    }


def test_gzip_json_body_is_accepted(store: RunningTraceStore, http: requests.Session) -> None:
    body = gzip.compress(json.dumps(otlp_json_body()).encode())

    response = _post(http, store, body, "application/json", {"Content-Encoding": "gzip"})

    assert response.status_code == 200
    assert TraceQuery(store.query_url).get_trace("5b8efff798038103d269b633813fc60c")


# --------------------------------------------------------------------------------------- bad OTLP bodies


def _json_with(**span_fields) -> bytes:
    body = otlp_json_body()
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0].update(span_fields)
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "headers", "status", "message"),
    [
        (b"\xff\xff\xff", "application/x-protobuf", {}, 400, "not a protobuf ExportTraceServiceRequest"),
        (b"{not json", "application/json", {}, 400, "not valid JSON"),
        (b"[]", "application/json", {}, 400, "must be an object"),
        (b'{"resourceSpans": "nope"}', "application/json", {}, 400, "not an OTLP/JSON"),
        (_json_with(traceId="not-hex"), "application/json", {}, 400, "traceId must be a hex string"),
        (
            _json_with(traceId="AQIDBAUGBwgJCgsMDQ4PEA=="),
            "application/json",
            {},
            400,
            "traceId must be a hex",
        ),
        (_json_with(traceId="abcd"), "application/json", {}, 400, "trace id must be 16 bytes"),
        (_json_with(spanId=""), "application/json", {}, 400, "span id must be 8 bytes"),
        (_json_with(kind=[1]), "application/json", {}, 400, "not an OTLP/JSON"),
        # json_format turns an enum given as a number too large for a float into an OverflowError.
        (_json_with(kind=float("inf")), "application/json", {}, 400, "not an OTLP/JSON"),
        (
            _json_with(kind=7).replace(b'"kind": 7', b'"kind": 1e400'),
            "application/json",
            {},
            400,
            "not an OTLP",
        ),
        (b"not gzip", "application/json", {"Content-Encoding": "gzip"}, 400, "not valid gzip"),
        (b"{}", "text/plain", {}, 415, "unsupported Content-Type 'text/plain'"),
        (b"{}", "application/json", {"Content-Encoding": "br"}, 415, "unsupported Content-Encoding 'br'"),
    ],
)
def test_bad_bodies_get_a_clear_4xx_never_a_500(
    shared_store: RunningTraceStore, http: requests.Session, body, content_type, headers, status, message
) -> None:
    response = _post(http, shared_store, body, content_type, headers)

    assert response.status_code == status
    if content_type == "application/x-protobuf":
        assert message in status_pb2.Status.FromString(response.content).message
    else:
        assert message in response.json()["message"]


def test_protobuf_with_a_short_trace_id_is_rejected(
    shared_store: RunningTraceStore, http: requests.Session
) -> None:
    response = _post(
        http, shared_store, _request(_span(b"\x01\x02\x03", b"\x02" * 8, "short")).SerializeToString()
    )

    assert response.status_code == 400
    assert "span 'short': trace id must be 16 bytes" in status_pb2.Status.FromString(response.content).message


@pytest.mark.parametrize(("path", "status"), [("/v1/metrics", 200), ("/v1/logs", 200), ("/v2/traces", 404)])
def test_other_signals_are_dropped_and_unknown_paths_are_404(
    shared_store: RunningTraceStore, http: requests.Session, path: str, status: int
) -> None:
    response = http.post(
        shared_store.otlp_endpoint + path, data=b"", headers={"Content-Type": "application/json"}
    )

    assert response.status_code == status


# ---------------------------------------------------------------------------------------------- query API


def test_unknown_trace_is_404_no_traces_found(
    shared_store: RunningTraceStore, http: requests.Session
) -> None:
    # Jaeger's answer, from http.Error: the JSON error as plain text (more rows in jaeger_parity.py).
    response = http.get(f"{shared_store.query_url}/api/v3/traces/{'ab' * 16}")

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.text == '{"error":{"httpCode":404,"message":"No traces found"}}\n'


@pytest.mark.parametrize("trace_id", ["xyz", "a" * 33])
def test_malformed_trace_id_is_400(
    shared_store: RunningTraceStore, http: requests.Session, trace_id: str
) -> None:
    response = http.get(f"{shared_store.query_url}/api/v3/traces/{trace_id}")

    assert response.status_code == 400
    assert "malformed parameter trace_id" in response.json()["error"]["message"]


def _export_at(tracer: Tracer, name: str, start_ns: int, duration_ms: int) -> str:
    span = tracer.start_span(name, kind=SpanKind.SERVER, start_time=start_ns)
    span.end(end_time=start_ns + duration_ms * MS)
    return trace_id_of(span)


@pytest.fixture
def timeline(tracer_for) -> dict[str, str]:
    """Three gateway traces one second apart (100, 200, 300 ms long) and one users trace."""
    gateway = tracer_for("gateway")
    return {
        "first": _export_at(gateway, "GET /api/users/<id>", HOUR_AGO_NS, 100),
        "second": _export_at(gateway, "POST /api/users", HOUR_AGO_NS + 10**9, 200),
        "third": _export_at(gateway, "POST /api/users", HOUR_AGO_NS + 2 * 10**9, 300),
        "users": _export_at(tracer_for("users"), "POST /users", HOUR_AGO_NS + 10**9, 10),
    }


def _search(http: requests.Session, store: RunningTraceStore, **params: str) -> requests.Response:
    query = {f"query.{name}": value for name, value in params.items()}
    return http.get(f"{store.query_url}/api/v3/traces", params=query)


def _found(response: requests.Response) -> list[str]:
    """Trace ids in answer order, each once."""
    assert response.status_code == 200, response.text
    ids = [
        span["traceId"]
        for resource in response.json()["result"]["resourceSpans"]
        for scope in resource["scopeSpans"]
        for span in scope["spans"]
    ]
    return list(dict.fromkeys(ids))


WINDOW = {"start_time_min": rfc3339(HOUR_AGO_NS), "start_time_max": rfc3339(HOUR_AGO_NS + 2 * 10**9)}


def test_search_finds_traces_of_a_service_in_the_window_most_recent_first(store, http, timeline) -> None:
    in_window = {
        "start_time_min": rfc3339(HOUR_AGO_NS + 1),
        "start_time_max": rfc3339(HOUR_AGO_NS + 2 * 10**9),
    }

    assert _found(_search(http, store, service_name="gateway", **in_window)) == [
        timeline["third"],
        timeline["second"],
    ]
    assert _found(_search(http, store, service_name="users", **WINDOW)) == [timeline["users"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"num_traces": "1"}, ["third"]),
        ({"operation_name": "GET /api/users/<id>"}, ["first"]),
        ({"duration_min": "150ms"}, ["third", "second"]),
        ({"duration_max": "0.25s", "duration_min": "150000us"}, ["second"]),
    ],
)
def test_search_filters(store, http, timeline, params: dict[str, str], expected: list[str]) -> None:
    response = _search(http, store, service_name="gateway", **WINDOW, **params)

    assert _found(response) == [timeline[name] for name in expected]


def test_search_accepts_camel_case_parameter_names(store, http, timeline) -> None:
    camel = {"startTimeMin": WINDOW["start_time_min"], "startTimeMax": WINDOW["start_time_max"]}

    response = _search(
        http, store, serviceName="gateway", numTraces="2", operationName="POST /api/users", **camel
    )

    assert _found(response) == [timeline["third"], timeline["second"]]


def test_search_without_match_is_404(store, http, timeline) -> None:
    later = {
        "start_time_min": rfc3339(HOUR_AGO_NS + 5 * 10**9),
        "start_time_max": rfc3339(HOUR_AGO_NS + 6 * 10**9),
    }

    response = _search(http, store, service_name="gateway", **later)

    assert response.status_code == 404
    assert response.json() == {"error": {"httpCode": 404, "message": "No traces found"}}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"service_name": "gateway"}, "query.startTimeMin and query.startTimeMax are required"),
        ({"service_name": "gateway", "start_time_min": WINDOW["start_time_min"]}, "are required"),
        (
            {"service_name": "gateway", **WINDOW, "duration_min": "10 parsecs"},
            "malformed parameter query.duration_min",
        ),
        ({"service_name": "gateway", **WINDOW, "num_traces": "many"}, "malformed parameter query.num_traces"),
        (
            {"service_name": "gateway", **WINDOW, "start_time_max": "yesterday"},
            "malformed parameter query.start_time_max",
        ),
    ],
)
def test_search_with_bad_parameters_is_400(shared_store, http, params: dict[str, str], message: str) -> None:
    response = _search(http, shared_store, **params)

    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_services_and_operations(store, http, timeline) -> None:
    assert http.get(f"{store.query_url}/api/v3/services").json() == {"services": ["gateway", "users"]}
    assert http.get(f"{store.query_url}/api/v3/operations", params={"service": "gateway"}).json() == {
        "operations": [
            {"name": "GET /api/users/<id>", "spanKind": "server"},
            {"name": "POST /api/users", "spanKind": "server"},
        ]
    }


def test_services_of_an_empty_store_is_an_empty_object(store, http) -> None:
    # proto3 JSON leaves the empty list out, as Jaeger's answer does.
    assert http.get(f"{store.query_url}/api/v3/services").json() == {}


def test_spans_survive_a_restart(tmp_path: Path, http: requests.Session) -> None:
    db = tmp_path / "traces.sqlite3"
    with serve_in_thread(db_path=db) as first:
        _post(http, first, json.dumps(otlp_json_body()).encode(), "application/json")

    with serve_in_thread(db_path=db) as second:
        spans = TraceQuery(second.query_url).get_trace("5b8efff798038103d269b633813fc60c")

    assert spans is not None and len(spans) == 3


# --------------------------------------------------------------------------------------------- process


def test_cli_process_serves_and_stops_cleanly_on_sigterm(tmp_path: Path, http: requests.Session) -> None:
    otlp_port, query_port = free_port(), free_port()
    command = [sys.executable, "-m", "tracehop", "trace-store", "--otlp-port", str(otlp_port)]
    command += ["--query-port", str(query_port), "--db", str(tmp_path / "traces.sqlite3")]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"}
    )
    try:
        _wait_until_answering(http, f"http://127.0.0.1:{query_port}/api/v3/services", process)
        ok = _post_to(http, f"http://127.0.0.1:{otlp_port}/v1/traces", json.dumps(otlp_json_body()).encode())
        assert ok.status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read()
    assert stderr.count("\n") == 1 and stderr.startswith("trace store: OTLP/HTTP on "), stderr


def _wait_until_answering(
    http: requests.Session, url: str, process: subprocess.Popen, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"trace store exited: {process.stderr.read()}"
        try:
            if http.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


# ----------------------------------------------------------------------------------------------- helpers


def _span(trace_id: bytes, span_id: bytes, name: str = "span", parent: bytes = b"") -> SpanProto:
    return SpanProto(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=SpanProto.SPAN_KIND_INTERNAL,
        start_time_unix_nano=HOUR_AGO_NS,
        end_time_unix_nano=HOUR_AGO_NS + MS,
        status=Status(code=Status.STATUS_CODE_OK),
    )


def _request(*spans: SpanProto) -> ExportTraceServiceRequest:
    resource = ResourceProto(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="users"))])
    scope = InstrumentationScope(name="tests", version="1.0")
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(scope=scope, spans=spans)])]
    )


def _post(
    http: requests.Session,
    store: RunningTraceStore,
    body: bytes,
    content_type: str = "application/x-protobuf",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return _post_to(http, store.traces_url, body, content_type, headers)


def _post_to(
    http: requests.Session,
    url: str,
    body: bytes,
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> requests.Response:
    return http.post(url, data=body, headers={"Content-Type": content_type, **(headers or {})}, timeout=5)


def test_a_resource_stored_by_a_rolled_back_request_is_stored_again(tmp_path: Path) -> None:
    """The store remembers the ids of the resources and scopes it stored, but only once the request
    that stored them committed: a request that failed half-way leaves no id pointing at nothing."""
    from tracehop.traces.store.database import SpanDatabase

    def request(name: str) -> ExportTraceServiceRequest:
        span = SpanProto(trace_id=b"\1" * 16, span_id=name.encode().ljust(8, b"_"), name=name)
        resource = ResourceProto(
            attributes=[KeyValue(key="service.name", value=AnyValue(string_value="svc"))]
        )
        scope_spans = ScopeSpans(scope=InstrumentationScope(name="scope"), spans=[span])
        return ExportTraceServiceRequest(
            resource_spans=[ResourceSpans(resource=resource, scope_spans=[scope_spans])]
        )

    database = SpanDatabase(tmp_path / "traces.sqlite3")
    try:
        # A real SQLite failure in the middle of the transaction (after the resource and scope were stored).
        database._connection.execute(
            "CREATE TEMP TRIGGER refuse BEFORE INSERT ON spans WHEN NEW.name = 'refused'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        with pytest.raises(sqlite3.IntegrityError):
            database.insert(request("refused"))
        assert database.insert(request("stored")) == 1
        rows = database._connection.execute(
            "SELECT s.name, r.id IS NOT NULL, c.id IS NOT NULL, a.key FROM spans AS s"
            " LEFT JOIN resources AS r ON r.id = s.resource_id LEFT JOIN scopes AS c ON c.id = s.scope_id"
            " LEFT JOIN resource_attributes AS a ON a.resource_id = s.resource_id"
        ).fetchall()
        assert rows == [("stored", 1, 1, "service.name")]
    finally:
        database.close()
