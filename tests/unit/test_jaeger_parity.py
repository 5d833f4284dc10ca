"""The trace store answers each request of the parity table (jaeger_parity.py) as Jaeger 2.20 does.

Three real stores on free ports, fed over OTLP/HTTP protobuf: one with the table's batches, one with many
small traces (search depth), one empty. Every row is sent as an HTTP request; its status, Content-Type and
body shape must be the table's (Jaeger's, or the store's own where the table says why it differs).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Status
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tests.unit import jaeger_parity as table
from tests.unit import jaeger_parity_spans as sent
from tracehop.traces.store.server import RunningTraceStore, serve_in_thread

# Whole milliseconds, a minute ago: every span lies well inside [MIN, MAX].
T0 = (time.time_ns() - 60 * 10**9) // sent.MS * sent.MS
MIN, MAX = T0 - 3600 * 10**9, T0 + 3600 * 10**9


def rfc3339(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    return AnyValue(string_value=str(value))


def key_values(attributes: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=any_value(value)) for key, value in attributes.items()]


def span_proto(span: sent.SpanData) -> SpanProto:
    proto = SpanProto(
        trace_id=bytes.fromhex(sent.TRACE_IDS[span.trace]),
        span_id=bytes.fromhex(span.span_id),
        parent_span_id=bytes.fromhex(span.parent),
        name=span.name,
        kind=span.kind,
        start_time_unix_nano=T0 + span.start_ms * sent.MS,
        end_time_unix_nano=T0 + span.end_ms * sent.MS,
        attributes=key_values(span.attributes),
    )
    if span.status is not None:
        proto.status.CopyFrom(Status(code=span.status))
    if span.event_attributes:
        proto.events.add(name="event", time_unix_nano=proto.start_time_unix_nano).attributes.extend(
            key_values(span.event_attributes)
        )
    return proto


def export(store: RunningTraceStore, request: ExportTraceServiceRequest) -> None:
    response = requests.post(
        store.traces_url,
        data=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def batch_request(batch: list[sent.ResourceData]) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for resource in batch:
        entry = ResourceSpans()
        entry.resource.attributes.extend(key_values(resource.attributes))
        for scope_name, spans in resource.scopes:
            scope = ScopeSpans(scope=InstrumentationScope(name=scope_name))
            scope.spans.extend(span_proto(span) for span in spans)
            entry.scope_spans.append(scope)
        request.resource_spans.append(entry)
    return request


def many_request() -> ExportTraceServiceRequest:
    entry = ResourceSpans()
    entry.resource.attributes.extend(key_values({"service.name": "many"}))
    scope = ScopeSpans(scope=InstrumentationScope(name="many"))
    for index in range(sent.MANY_TRACES):
        scope.spans.append(
            SpanProto(
                trace_id=(index + 1).to_bytes(16, "big"),
                span_id=(index + 1).to_bytes(8, "big"),
                name="GET /",
                kind=2,
                start_time_unix_nano=T0 + index * sent.MS,
                end_time_unix_nano=T0 + index * sent.MS + 1000,
            )
        )
    entry.scope_spans.append(scope)
    return ExportTraceServiceRequest(resource_spans=[entry])


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningTraceStore]]:
    root = tmp_path_factory.mktemp("parity")
    with (
        serve_in_thread(db_path=root / "batches.sqlite3") as batches,
        serve_in_thread(db_path=root / "many.sqlite3") as many,
        serve_in_thread(db_path=Path(root / "empty.sqlite3")) as empty,
    ):
        for batch in sent.BATCHES:
            export(batches, batch_request(list(batch)))
        export(many, many_request())
        yield {"batches": batches, "many": many, "empty": empty}


def substitutions() -> dict[str, str]:
    a = bytes.fromhex(sent.TRACE_IDS["A"])
    a3_start = T0 + 10 * sent.MS
    return {
        **sent.TRACE_IDS,
        "A_UPPER": sent.TRACE_IDS["A"].upper(),
        "B_SHORT": sent.TRACE_IDS["B"].lstrip("0"),
        "A64": base64.b64encode(a).decode(),
        "A64URL": base64.urlsafe_b64encode(a).decode().rstrip("="),
        "min": rfc3339(MIN),
        "max": rfc3339(MAX),
        "A3_START": rfc3339(a3_start),
        "A3_START_1NS": rfc3339(a3_start + 1),
    }


def deprecated_spelling(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(table.ALIASES.get(name, name), value) for name, value in params]


def send(
    store: RunningTraceStore, method: str, template: str, spell: bool = False
) -> tuple[requests.Response, str]:
    """Send one row's request; the URL is built from the template, its query values percent-encoded."""
    path, _, query = template.partition("?")
    for name, value in substitutions().items():
        # In the path, a value travels percent-encoded: a base64 id's "/" and "+" must stay in their segment,
        # as Jaeger's own test sends them (apiv3/http_gateway_test.go TestHTTPGatewayGetTraceBase64).
        path = path.replace("{" + name + "}", requests.utils.quote(value, safe=""))
        query = query.replace("{" + name + "}", value)
    params = [tuple(item.split("=", 1)) for item in query.split("&")] if query else []
    if spell:
        params = deprecated_spelling(params)
    response = requests.request(method, store.query_url + path, params=params, timeout=10)
    return response, response.request.url or ""


ROWS = table.rows(T0)


def cases() -> list[Any]:
    out = []
    for row in ROWS:
        out.append(pytest.param(row, False, id=row.name))
        if row.both_spellings:
            out.append(pytest.param(row, True, id=row.name + " [snake_case]"))
    return out


@pytest.mark.parametrize(("row", "snake_case"), cases())
def test_store_answers_like_jaeger(row: table.Row, snake_case: bool, stores: dict[str, RunningTraceStore]):
    response, url = send(stores[row.store], row.method, row.path, spell=snake_case)
    expected = row.expected
    where = f"{row.method} {url}\n  Jaeger: {row.source}" + (
        f"\n  kept different: {row.why}" if row.ours else ""
    )
    assert response.status_code == expected.status, (
        f"{where}\n  status {response.status_code}: {response.text}"
    )
    assert response.headers.get("Content-Type") == expected.content_type, where
    if expected.content_type == table.TEXT:
        # http.Error's answers also tell browsers not to sniff them.
        assert response.headers.get("X-Content-Type-Options") == "nosniff", where
        body: Any = response.text
    else:
        body = response.json()
    try:
        expected.body(body)
    except AssertionError as error:
        raise AssertionError(f"{where}\n  {error}") from None


def test_every_kept_difference_says_why():
    for row in ROWS:
        assert bool(row.ours) == bool(row.why), f"{row.name}: a difference needs `ours` and `why` together"


def test_both_spellings_are_really_different_requests():
    # The snake_case variant must not degenerate into the same URL (a row without any aliased name).
    for row in ROWS:
        if row.both_spellings:
            params = row.path.partition("?")[2].replace("{", "").split("&")
            names = [item.split("=", 1)[0] for item in params]
            assert any(name in table.ALIASES for name in names), f"{row.name}: no aliased parameter"


def test_the_table_source_comments_name_jaeger_files():
    for row in ROWS:
        assert row.source and any(
            part in row.source for part in ("apiv3/", "memory/", "querysvc/", "server.go")
        ), row.name


def test_search_json_in_a_query_is_percent_encoded(stores: dict[str, RunningTraceStore]):
    # Guards `send`: the attribute rows' JSON must reach the store as sent, braces and quotes included.
    response, url = send(
        stores["batches"], "GET", '/api/v3/traces?query.attributes={"a":"b"}&' + table.WINDOW
    )
    assert "query.attributes=%7B%22a%22%3A%22b%22%7D" in url
    assert json.loads(requests.utils.unquote(url.split("query.attributes=")[1].split("&")[0])) == {"a": "b"}
    assert response.status_code in (200, 404)
