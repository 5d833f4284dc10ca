"""Span accounting and freshness: what the bench reads back from the local trace store."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.bench.freshness_process import FreshnessProcess
from tracehop.bench.spans import (
    FreshnessTracker,
    TraceRoot,
    TraceShape,
    TraceStoreReader,
    account_spans,
    shape_of,
)
from tracehop.traces.query import Span, TraceQuery
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.server import RunningTraceStore, serve_in_thread

POST = "POST /api/users"
GET = "GET /api/users/<user_id>"
SHAPES = {
    POST: TraceShape("gateway", POST, spans=9, job_spans=1),
    GET: TraceShape("gateway", GET, spans=6, job_spans=0),
}


def test_all_spans_stored_means_nothing_dropped():
    roots = [TraceRoot("a", POST, 9), TraceRoot("b", GET, 6)]
    account = account_spans(roots, {POST: 1, GET: 1}, SHAPES)
    assert (account.exported, account.expected, account.dropped, account.incomplete_traces) == (15, 15, 0, 0)


def test_spans_missing_from_stored_traces_are_dropped():
    roots = [TraceRoot("a", POST, 7), TraceRoot("b", POST, 9)]
    account = account_spans(roots, {POST: 2}, SHAPES)
    assert account.dropped == 2
    assert account.incomplete_traces == 1


def test_an_answered_request_without_any_stored_trace_lost_all_its_spans():
    account = account_spans([TraceRoot("a", GET, 6)], {GET: 3}, SHAPES)
    assert account.missing_roots == 2
    assert account.dropped == 12
    assert account.expected == 18


def test_with_a_ratio_sampler_unstored_traces_were_not_sampled_but_stored_ones_must_be_complete():
    roots = [TraceRoot("a", GET, 6), TraceRoot("b", GET, 5)]
    account = account_spans(roots, {GET: 10}, SHAPES, every_request_sampled=False)
    assert account.missing_roots == 8  # reported, not counted as dropped
    assert account.dropped == 1 and account.incomplete_traces == 1


def test_requests_in_flight_when_the_load_stopped_are_not_counted_as_lost():
    # The generator stopped before reading the answer, but the gateway finished the request.
    account = account_spans([TraceRoot("a", GET, 6), TraceRoot("b", GET, 6)], {GET: 1}, SHAPES)
    assert account.dropped == 0 and account.missing_roots == 0


def test_jobs_purged_from_an_undrained_queue_never_ran_so_their_spans_are_not_dropped():
    roots = [TraceRoot("a", POST, 8), TraceRoot("b", POST, 8)]  # both lack the worker's span
    assert account_spans(roots, {POST: 2}, SHAPES, purged_jobs=2).dropped == 0
    assert account_spans(roots, {POST: 2}, SHAPES, purged_jobs=1).dropped == 1


def test_untraced_mode_has_no_shapes_and_nothing_to_account():
    account = account_spans([], {}, {})
    assert (account.exported, account.expected, account.dropped) == (0, 0, 0)


def _span(trace: str, span: str, parent: str, service: str, name: str) -> Span:
    return Span(trace, span, parent, name, "SERVER", service, 0, 1)


def test_shape_is_learnt_from_a_warm_up_trace():
    spans = [
        _span("t", "1", "", "gateway", POST),
        _span("t", "2", "1", "users", "POST /users"),
        _span("t", "3", "1", "worker", "run/send_welcome_email"),
        _span("t", "4", "3", "worker", "deliver"),
    ]
    assert shape_of(spans) == TraceShape("gateway", POST, spans=4, job_spans=2)
    with pytest.raises(ValueError, match="one root"):
        shape_of(spans[1:])


# --------------------------------------------------------------------------- against a real store file

T0 = time.time_ns()


def export_request(trace_id: str, spans: list[tuple[str, str, str, int]], service: str = "gateway"):
    """spans: (span id, parent id, name, start offset in ms) in one resource of `service`."""
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    protos = [
        SpanProto(
            trace_id=bytes.fromhex(trace_id),
            span_id=bytes.fromhex(span_id),
            parent_span_id=bytes.fromhex(parent) if parent else b"",
            name=name,
            kind=SpanProto.SPAN_KIND_SERVER,
            start_time_unix_nano=T0 + offset_ms * 1_000_000,
            end_time_unix_nano=T0 + offset_ms * 1_000_000 + 1000,
        )
        for span_id, parent, name, offset_ms in spans
    ]
    return ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(resource=resource, scope_spans=[ScopeSpans(spans=protos)])]
    )


TRACE_A, TRACE_B, TRACE_C = "a" * 32, "b" * 32, "c" * 32


@pytest.fixture
def db_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "traces.sqlite3"
    database = SpanDatabase(path)
    database.insert(export_request(TRACE_A, [("a1" * 8, "", POST, 0), ("a2" * 8, "a1" * 8, "POST", 1)]))
    database.insert(export_request(TRACE_A, [("a3" * 8, "a2" * 8, "POST /users", 2)], service="users"))
    database.insert(export_request(TRACE_B, [("b1" * 8, "", GET, 1000)]))  # one second later
    database.insert(export_request(TRACE_C, [("c1" * 8, "", "GET", 5)]))  # a stray root (readiness call)
    database.close()
    yield path


def test_reader_finds_roots_in_a_time_window_with_their_span_counts(db_path: Path):
    reader = TraceStoreReader(db_path)
    roots = reader.roots_between(T0 - 1, T0 + 500_000_000, "gateway", [POST, GET])
    assert roots == [TraceRoot(TRACE_A, POST, 3)]
    later = reader.roots_between(T0, T0 + 2_000_000_000, "gateway", [GET])
    assert later == [TraceRoot(TRACE_B, GET, 1)]
    assert reader.span_counts([TRACE_A, TRACE_B, "f" * 32]) == {TRACE_A: 3, TRACE_B: 1}
    assert reader.high_water() >= 5
    reader.close()


def test_reader_waits_until_no_span_arrives(db_path: Path):
    reader = TraceStoreReader(db_path)
    assert reader.wait_until_settled(quiet_s=0.3, timeout_s=5)
    reader.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunningTraceStore]:
    with serve_in_thread(db_path=tmp_path / "store.sqlite3") as running:
        yield running


def _export(store: RunningTraceStore, request: ExportTraceServiceRequest) -> None:
    response = requests.post(
        store.traces_url,
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=5,
    )
    response.raise_for_status()


def test_freshness_is_measured_once_the_whole_trace_is_queryable(store: RunningTraceStore, tmp_path: Path):
    _export(store, export_request(TRACE_A, [("a1" * 8, "", POST, 0)]))  # the store creates its tables
    reader = TraceStoreReader(Path(os.fspath(tmp_path / "store.sqlite3")))
    tracker = FreshnessTracker(reader, TraceQuery(store.query_url), expected_spans=2, poll_s=0.02).start()
    responded = time.time()
    tracker.add(TRACE_A, responded)
    tracker.add(TRACE_B, responded)  # never arrives
    time.sleep(0.15)
    _export(store, export_request(TRACE_A, [("a2" * 8, "a1" * 8, "POST", 1)]))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not tracker.completed:
        time.sleep(0.02)
    result = tracker.finish(timeout_s=0.2)
    reader.close()
    assert result.incomplete == 1
    assert len(result.delays_s) == 1
    # Not before the second span was stored, and well within the polling resolution after it.
    assert 0.15 <= result.delays_s[0] < 3
    assert result.as_dict()["samples"] == 2


def test_the_poller_in_its_own_process_measures_freshness_the_same_way(
    store: RunningTraceStore, tmp_path: Path
):
    _export(store, export_request(TRACE_A, [("a1" * 8, "", POST, 0)]))  # the store creates its tables
    db = Path(os.fspath(tmp_path / "store.sqlite3"))
    tracker = FreshnessProcess(db, store.query_url, expected_spans=2, poll_s=0.02).start()
    assert tracker.pid != os.getpid() and tracker.cpu_s() > 0  # a process of its own, which has started
    responded = time.time()
    tracker.add(TRACE_A, responded)
    tracker.add(TRACE_B, responded)  # never arrives
    time.sleep(0.3)
    _export(store, export_request(TRACE_A, [("a2" * 8, "a1" * 8, "POST", 1)]))
    result = tracker.finish(timeout_s=3)
    assert result.incomplete == 1
    assert len(result.delays_s) == 1
    # Not before the second span was stored, and well within the polling resolution after it.
    assert 0.3 <= result.delays_s[0] < 3
