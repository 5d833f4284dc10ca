"""Jaeger's parameter syntaxes (Go's time, duration, integer and boolean parsers, trace ids, attribute text)
as the store reads them; the HTTP answers built on them are in the parity table (test_jaeger_parity.py)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tracehop.traces.store.attribute_text import as_string, go_float
from tracehop.traces.store.otlp import BadRequest
from tracehop.traces.store.query_params import (
    parse_go_bool,
    parse_go_duration_ns,
    parse_go_int,
    parse_rfc3339_ns,
    parse_search,
    parse_trace_id,
)
from tracehop.traces.store.summaries import summarize_trace

TRACE = bytes.fromhex("5b8efff798038103d269b633813fc60c")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5b8efff798038103d269b633813fc60c", TRACE.hex()),
        ("5B8EFFF798038103D269B633813FC60C", TRACE.hex()),
        ("abc", "0" * 29 + "abc"),
        (base64.b64encode(TRACE).decode(), TRACE.hex()),  # W47/95gDgQPSabYzgT/GDA==
        (base64.urlsafe_b64encode(TRACE).decode(), TRACE.hex()),
        (base64.b64encode(TRACE).decode().rstrip("="), TRACE.hex()),
        (base64.urlsafe_b64encode(TRACE).decode().rstrip("="), TRACE.hex()),
        (base64.b64encode(TRACE[8:]).decode(), "0" * 16 + TRACE[8:].hex()),  # 64-bit
    ],
)
def test_trace_ids_in_hex_or_base64(text: str, expected: str) -> None:
    assert parse_trace_id(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "zzzz",
        "5b8efff798038103d269b633813fc60c0",
        base64.b64encode(b"\x01" * 12).decode(),
        "a b",
        "W47/95g-",
    ],
)
def test_bad_trace_ids(text: str) -> None:
    with pytest.raises(BadRequest, match="malformed parameter trace_id: "):
        parse_trace_id(text)


def test_rfc3339_as_go_reads_it() -> None:
    assert parse_rfc3339_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_rfc3339_ns("1970-01-01T01:00:00+01:00") == 0
    assert parse_rfc3339_ns("1970-01-01T00:00:00.1234567891Z") == 123_456_789  # beyond ns: dropped
    for bad in (
        "1970-01-01t00:00:00Z",
        "1970-01-01T00:00:00z",
        "1970-01-01T00:00:00",
        "1970-02-30T00:00:00Z",
    ):
        with pytest.raises(ValueError):
            parse_rfc3339_ns(bad)


def test_go_durations_integers_and_booleans() -> None:
    assert parse_go_duration_ns("1.5s") == 1_500_000_000
    assert parse_go_duration_ns("-1h2m") == -3_720 * 10**9
    assert parse_go_duration_ns("+0") == parse_go_duration_ns("0") == 0
    assert parse_go_duration_ns("1µs") == parse_go_duration_ns("1us") == 1_000
    for bad in ("1", "1 s", "s", "", "1d"):
        with pytest.raises(ValueError):
            parse_go_duration_ns(bad)
    assert parse_go_int("+7") == 7 and parse_go_int("-3") == -3
    for bad in (" 5", "5.0", "5_0", str(2**63)):
        with pytest.raises(ValueError):
            parse_go_int(bad)
    assert parse_go_bool("T") is True and parse_go_bool("False") is False
    with pytest.raises(ValueError):
        parse_go_bool("yes")


WINDOW = "query.startTimeMin=1970-01-01T00:00:00Z&query.startTimeMax=1970-01-01T00:01:00Z"


def search(query: str):  # type: ignore[no-untyped-def]
    return parse_search(parse_qs(query, keep_blank_values=True))


def test_search_defaults_and_aliases() -> None:
    params = search(WINDOW)
    assert (params.service, params.depth, params.attributes) == ("", 100, ())
    # The canonical name wins; an empty canonical value falls back to the alias, as url.Values.Get does.
    assert search(WINDOW + "&query.serviceName=&query.service_name=users").service == "users"
    assert search(WINDOW + "&query.serviceName=gateway&query.service_name=users").service == "gateway"
    assert search(WINDOW + "&query.search_depth=4&query.num_traces=5").depth == 4
    assert search(WINDOW + '&query.attributes={"a":"1","b":"x"}').attributes == (("a", "1"), ("b", "x"))
    assert search(WINDOW + "&query.attributes=null").attributes == ()
    assert search(WINDOW + "&query.durationMin=0s").duration_min_ns is None


def test_search_reports_the_first_problem_in_jaegers_order() -> None:
    # Attributes are read before the window (apiv3/query_parser.go).
    with pytest.raises(BadRequest, match="malformed parameter query.attributes"):
        search("query.attributes=[1]")
    with pytest.raises(BadRequest, match="malformed parameter query.num_traces"):
        search(WINDOW + "&query.num_traces=x")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (AnyValue(string_value="a b"), "a b"),
        (AnyValue(int_value=409), "409"),
        (AnyValue(bool_value=True), "true"),
        (AnyValue(double_value=200.0), "200"),
        (AnyValue(double_value=0.25), "0.25"),
        (AnyValue(double_value=1e21), "1e+21"),
        (AnyValue(double_value=1e-7), "1e-7"),
        (AnyValue(bytes_value=b"\x00\x01"), "AAE="),
        (
            AnyValue(array_value=ArrayValue(values=[AnyValue(int_value=1), AnyValue(string_value="<a>")])),
            '[1,"\\u003ca\\u003e"]',
        ),
        (
            AnyValue(
                kvlist_value=KeyValueList(
                    values=[
                        KeyValue(key="b", value=AnyValue(double_value=2.0)),
                        KeyValue(key="a", value=AnyValue()),
                    ]
                )
            ),
            '{"a":null,"b":2}',
        ),
        (AnyValue(), ""),
    ],
)
def test_attribute_values_compare_as_pdata_prints_them(value: AnyValue, text: str) -> None:
    assert as_string(value) == text


def test_go_float_switches_to_exponents_where_javascript_does() -> None:
    assert [go_float(x) for x in (1e20, 1.5e-6, 1e-6, 9.99e-7, -0.0)] == [
        "100000000000000000000",
        "0.0000015",
        "0.000001",
        "9.99e-7",
        "-0",
    ]


def span(
    span_id: int, parent: int = 0, start: int = 0, end: int = 1, status: int = 0, name: str = "s"
) -> SpanProto:
    return SpanProto(
        trace_id=TRACE,
        span_id=span_id.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"",
        name=name,
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        status=Status(code=status),
    )


def test_summary_root_orphans_and_services() -> None:
    summary = summarize_trace(
        [
            ("users", span(3, parent=2, start=15, end=20, status=2)),
            ("gateway", span(2, start=10, end=50, name="late root")),
            ("gateway", span(1, start=5, end=40, name="early root")),
            ("", span(4, parent=99, start=7, end=8)),
        ]
    )
    assert summary == {
        "traceId": TRACE.hex(),
        "rootServiceName": "gateway",
        "rootOperationName": "early root",
        "minStartTimeUnixNano": "5",
        "maxEndTimeUnixNano": "50",
        "spanCount": 4,
        "errorSpanCount": 1,
        "orphanSpanCount": 1,
        # sorted by name; "" first, its name left out as proto3 JSON does
        "services": [
            {"spanCount": 1},
            {"name": "gateway", "spanCount": 2},
            {"name": "users", "spanCount": 1, "errorSpanCount": 1},
        ],
    }
