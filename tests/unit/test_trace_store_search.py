"""The store features behind the viewer: search by attribute (Jaeger's query.attributes semantics), errors
only, by calling service; the service map; retention. Spans go in as OTLP protobuf, as exporters send them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store.database import SpanDatabase, TraceSearch
from tracehop.traces.store.retention import Retention, RetentionError, parse_retention

NOW = 1_800_000_000 * 10**9
MS = 10**6
SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


def value(item: object) -> AnyValue:
    if isinstance(item, bool):
        return AnyValue(bool_value=item)
    if isinstance(item, int):
        return AnyValue(int_value=item)
    if isinstance(item, float):
        return AnyValue(double_value=item)
    return AnyValue(string_value=str(item))


def attrs(mapping: dict) -> list[KeyValue]:
    return [KeyValue(key=key, value=value(item)) for key, item in mapping.items()]


def span(
    trace: int,
    span_id: int,
    parent: int = 0,
    name: str = "op",
    kind: int = 1,
    start_ms: int = 0,
    duration_ms: int = 1,
    error: bool = False,
    events: list[dict] | None = None,
    **attributes,
) -> SpanProto:
    result = SpanProto(
        trace_id=trace.to_bytes(16, "big"),
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        kind=kind,
        start_time_unix_nano=NOW + start_ms * MS,
        end_time_unix_nano=NOW + (start_ms + duration_ms) * MS,
        attributes=attrs(attributes),
        status=Status(code=2 if error else 0),
    )
    for event in events or []:
        result.events.add(name="log", time_unix_nano=NOW, attributes=attrs(event))
    return result


def export(database: SpanDatabase, service: str, *spans: SpanProto, **resource) -> None:
    resource_spans = ResourceSpans(scope_spans=[ScopeSpans(spans=list(spans))])
    resource_spans.resource.attributes.extend(attrs({"service.name": service, **resource}))
    database.insert(ExportTraceServiceRequest(resource_spans=[resource_spans]))


def tid(number: int) -> str:
    return number.to_bytes(16, "big").hex()


@pytest.fixture
def database(tmp_path: Path) -> SpanDatabase:
    database = SpanDatabase(tmp_path / "traces.sqlite3")
    # trace 1: gateway -> users (HTTP), tenant acme on both; trace 2: gateway -> worker (message), tenant
    # zeta, an error in the worker; trace 3: beat -> worker -> users, no tenant.
    export(
        database,
        "gateway",
        span(1, 11, name="POST /api/users", kind=SERVER, duration_ms=30, **{"tracehop.tenant": "acme"}),
        span(1, 12, 11, name="POST", kind=CLIENT, start_ms=1, duration_ms=20),
        span(
            2,
            21,
            name="POST /api/users/<user_id>/report",
            kind=SERVER,
            start_ms=100,
            duration_ms=5,
            **{"tracehop.tenant": "zeta", "http.response.status_code": 202},
        ),
        span(2, 22, 21, name="apply_async/generate_report", kind=PRODUCER, start_ms=101),
        **{"host.name": "laptop"},
    )
    export(
        database,
        "users",
        span(
            1,
            13,
            12,
            name="POST /users",
            kind=SERVER,
            start_ms=2,
            duration_ms=15,
            events=[{"user_id": 7}],
            **{"tracehop.tenant": "acme", "http.response.status_code": 201},
        ),
        span(3, 33, 34, name="GET /users/<int:user_id>", kind=SERVER, start_ms=203),
    )
    export(
        database,
        "worker",
        span(2, 23, 22, name="run/generate_report", kind=CONSUMER, start_ms=102, error=True),
        span(3, 32, 31, name="run/cleanup", kind=CONSUMER, start_ms=201),
        span(3, 34, 32, name="GET", kind=CLIENT, start_ms=202, error=True),
    )
    export(database, "beat", span(3, 31, name="apply_async/cleanup", kind=PRODUCER, start_ms=200))
    yield database
    database.close()


def find(database: SpanDatabase, **conditions) -> list[str]:
    return database.find_trace_ids(
        TraceSearch(
            service=conditions.pop("service", ""), start_min_ns=0, start_max_ns=2**63 - 1, **conditions
        )
    )


def test_attribute_search_finds_the_traces_with_a_span_carrying_the_value(database):
    assert find(database, attributes=(("tracehop.tenant", "acme"),)) == [tid(1)]
    # Compared as text, as Jaeger does: 202 finds the integer 202.
    assert find(database, attributes=(("http.response.status_code", "202"),)) == [tid(2)]
    assert find(database, attributes=(("tracehop.tenant", "nobody"),)) == []


def test_attribute_search_looks_at_resource_and_event_attributes_too(database):
    assert set(find(database, attributes=(("host.name", "laptop"),))) == {tid(1), tid(2)}
    assert find(database, attributes=(("user_id", "7"),)) == [tid(1)]


def test_several_attributes_and_the_span_conditions_must_hold_on_one_span(database):
    both = (("tracehop.tenant", "acme"), ("http.response.status_code", "201"))
    assert find(database, attributes=both) == [tid(1)]
    assert find(database, service="users", attributes=both) == [tid(1)]
    # The gateway span has the tenant but not the status 201: no single gateway span matches both.
    assert find(database, service="gateway", attributes=both) == []
    assert (
        find(database, service="gateway", operation="POST", attributes=(("tracehop.tenant", "acme"),)) == []
    )


def test_errors_only_and_calling_service(database):
    assert set(find(database, errors_only=True)) == {tid(2), tid(3)}
    assert find(database, service="users", parent_service="worker") == [tid(3)]
    assert find(database, service="users", parent_service="gateway") == [tid(1)]
    assert find(database, service="worker", parent_service="gateway") == [tid(2)]
    # beat is in trace 3, but no users span there has a beat span as its parent.
    assert find(database, service="users", parent_service="beat") == []


def test_results_are_newest_first_and_limited(database):
    assert find(database) == [tid(3), tid(2), tid(1)]
    assert find(database, num_traces=2) == [tid(3), tid(2)]


def test_service_map_counts_cross_service_calls_and_their_errors(database):
    service_map = database.service_map(0, 2**63 - 1)
    edges = {(edge.parent, edge.child): (edge.calls, edge.errors) for edge in service_map.edges}
    assert edges == {
        ("gateway", "users"): (1, 0),
        ("gateway", "worker"): (1, 1),
        ("beat", "worker"): (1, 0),
        ("worker", "users"): (1, 0),
    }
    nodes = {node.service: (node.spans, node.errors) for node in service_map.nodes}
    assert nodes == {"beat": (1, 0), "gateway": (4, 0), "users": (2, 0), "worker": (3, 2)}


def test_service_map_of_some_traces_and_of_a_window(database):
    only_acme = database.service_map(0, 2**63 - 1, trace_ids=[tid(1)])
    assert [(edge.parent, edge.child, edge.calls) for edge in only_acme.edges] == [("gateway", "users", 1)]
    late = database.service_map(NOW + 150 * MS, 2**63 - 1)
    assert {(edge.parent, edge.child) for edge in late.edges} == {("beat", "worker"), ("worker", "users")}
    assert database.service_map(0, 1).to_json() == {"nodes": [], "edges": []}


def test_retention_by_age_removes_whole_old_traces(database, tmp_path: Path):
    # "now" 150 ms after the reference time with a 100 ms limit: trace 1 (0-30 ms) is older than 50 ms;
    # trace 2 (100-102 ms) and trace 3 (200 ms) are not.
    deleted = database.prune(Retention(max_age_ns=100 * MS, max_spans=0), NOW + 150 * MS)
    assert deleted == 3
    assert database.trace(tid(1)) == []
    assert len(database.trace(tid(2))) == 3
    # Its attribute rows went with it: the tenant is not found any more, and nothing is left behind.
    assert find(database, attributes=(("tracehop.tenant", "acme"),)) == []
    with sqlite3.connect(tmp_path / "traces.sqlite3") as connection:
        (left,) = connection.execute(
            "SELECT COUNT(*) FROM span_attributes WHERE span_rowid NOT IN (SELECT rowid FROM spans)"
        ).fetchone()
    assert left == 0
    assert database.service_map(0, 2**63 - 1).to_json()["edges"][0]["parent"] == "beat"


def test_retention_by_span_count_keeps_the_newest_traces(database):
    assert database.prune(Retention(max_age_ns=0, max_spans=5), NOW) == 6
    assert find(database) == [tid(3)]
    assert database.prune(Retention(max_age_ns=0, max_spans=5), NOW) == 0


def test_retention_setting():
    assert parse_retention("") == Retention()
    assert parse_retention("max_age=36h") == Retention(max_age_ns=36 * 3600 * 10**9)
    assert parse_retention("max_age=7d, max_spans=1000") == Retention(7 * 86400 * 10**9, 1000)
    assert parse_retention("max_spans=0,max_age=0") == Retention(0, 0)
    for bad in ("7d", "max_age=soon", "max_spans=-1", "max_age=1w"):
        with pytest.raises(RetentionError, match="TRACEHOP_TRACE_RETENTION"):
            parse_retention(bad)


def test_a_database_written_before_the_attribute_index_gets_it(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    database = SpanDatabase(path)
    export(
        database, "gateway", span(5, 51, name="GET", **{"tracehop.tenant": "acme"}), **{"host.name": "old"}
    )
    database.close()
    with sqlite3.connect(path) as connection:  # what a store before the index left on disk
        connection.execute("DELETE FROM span_attributes")
        connection.execute("DELETE FROM resource_attributes")
        connection.execute("PRAGMA user_version = 0")
    database = SpanDatabase(path)
    try:
        assert find(database, attributes=(("tracehop.tenant", "acme"),)) == [tid(5)]
        assert find(database, attributes=(("host.name", "old"),)) == [tid(5)]
    finally:
        database.close()


def test_a_running_store_prunes_what_is_past_its_retention(tmp_path: Path):
    """The store applies its retention soon after it starts (and every minute after): the old trace is
    gone from the query API, the recent one stays."""
    import time

    import requests

    from tracehop.traces.store.server import serve_in_thread

    path = tmp_path / "traces.sqlite3"
    database = SpanDatabase(path)
    export(database, "gateway", span(1, 11, name="old"))  # NOW is in 2027: move it back a day
    database.close()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE spans SET start_ns = start_ns - ?, end_ns = end_ns - ?", (NOW, NOW))
        connection.execute(
            "UPDATE traces SET min_start_ns = min_start_ns - ?, max_start_ns = max_start_ns - ?", (NOW, NOW)
        )
    recent = SpanDatabase(path)
    recent_span = span(2, 21, name="recent")
    recent_span.start_time_unix_nano = time.time_ns()
    recent_span.end_time_unix_nano = time.time_ns() + MS
    export(recent, "gateway", recent_span)
    recent.close()

    http = requests.Session()
    http.trust_env = False
    with serve_in_thread(db_path=path, retention=Retention(max_age_ns=3600 * 10**9, max_spans=0)) as store:
        deadline = time.monotonic() + 10
        while http.get(f"{store.query_url}/api/v3/traces/{tid(1)}", timeout=5).status_code != 404:
            assert time.monotonic() < deadline, "the old trace was not pruned"
            time.sleep(0.05)
        assert http.get(f"{store.query_url}/api/v3/traces/{tid(2)}", timeout=5).status_code == 200


def test_a_bad_retention_setting_stops_the_store_with_a_message(monkeypatch, tmp_path: Path, capsys):
    from tracehop.cli import EXIT_FAILED, main
    from tracehop.stack.config import free_port

    monkeypatch.setenv("TRACEHOP_TRACE_RETENTION", "max_age=forever")
    ports = ["--otlp-port", str(free_port()), "--query-port", str(free_port())]
    assert main(["trace-store", "--db", str(tmp_path / "t.sqlite3"), *ports]) == EXIT_FAILED
    assert "TRACEHOP_TRACE_RETENTION" in capsys.readouterr().err


def test_a_database_of_the_store_before_chunks_is_brought_up_to_date(tmp_path: Path):
    path = tmp_path / "old.sqlite3"
    database = SpanDatabase(path)
    export(database, "gateway", span(5, 51, name="GET", **{"tracehop.tenant": "acme"}))
    export(database, "users", span(6, 61, name="GET /users"))
    export(database, "gateway", span(5, 52, 51, name="SELECT"))
    database.close()
    with sqlite3.connect(path) as connection:  # what the store before chunks and trace numbers left on disk
        connection.execute("ALTER TABLE spans DROP COLUMN resource_chunk")
        connection.execute("ALTER TABLE spans DROP COLUMN scope_chunk")
        connection.execute("DROP TABLE traces")
        connection.execute("PRAGMA user_version = 1")
    database = SpanDatabase(path)
    try:
        # Traces numbered by their first stored span; old spans grouped as they were (by resource).
        assert find(database) == [tid(6), tid(5)]
        assert {span.resource_chunk for span in database.trace(tid(5))} == {1}
        assert find(database, attributes=(("tracehop.tenant", "acme"),)) == [tid(5)]
        # New spans get chunks after every old one.
        export(database, "gateway", span(5, 53, 51, name="UPDATE"))
        chunks = [(span.resource_chunk, span.scope_chunk) for span in database.trace(tid(5))]
        assert chunks[:2] == [(1, 1), (1, 1)] and chunks[2][0] > 1 and chunks[2][1] > chunks[2][0]
    finally:
        database.close()


def test_search_order_is_first_arrival_not_start_time(database):
    # Trace 9 starts before every other trace but arrives last: it comes first, as in Jaeger's ring buffer.
    export(database, "gateway", span(9, 91, name="GET /early", start_ms=-1000))
    assert find(database)[:2] == [tid(9), tid(3)]
    # A late span of trace 1 does not move it (its place is that of its first span).
    export(database, "gateway", span(1, 19, 11, name="late", start_ms=500))
    assert find(database) == [tid(9), tid(3), tid(2), tid(1)]
