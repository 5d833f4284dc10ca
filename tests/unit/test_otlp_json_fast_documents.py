"""Differential tests of the trace store's OTLP/JSON ingest on documents as any sender may write them.

test_otlp_json_differential.py checks the fast decoder on the bodies tracehop's exporter writes. Here
hypothesis writes the JSON itself, in every form the OTLP/JSON specification and `json_format` accept:
each field under its JSON name (camelCase) or its proto name (snake_case), 64-bit integers as strings or
numbers, enums as numbers or names, doubles as numbers or "NaN"/"Infinity", bytes in base64, hex ids in
either case, empty and absent values, nested arrays and key/value lists, events, links, status, flags,
trace state, dropped counts, resources and scopes with attributes and schema URLs. For each document the
store's path (otlp.decode_export_batch: orjson and the fast decoder straight to rows and index terms, or
json_format when it declines) must store
exactly the rows that the reference path stores (hex ids to base64, `json_format.ParseDict`, the same
id checks and SpanDatabase.insert), or both must reject the document. When the document is in the
canonical form exporters send, the fast decoder must take it itself.
"""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.telemetry.otlp_json_encoder import encode_spans_json
from tracehop.bench.span_sample import sdk_spans
from tracehop.traces.store import otlp_json_fast
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.otlp import (
    JSON,
    BadRequest,
    check_ids,
    decode_export_batch,
    decode_export_request,
    parse_otlp_json_document,
)

# Row ids included: the order of arrival is part of what is stored (searches answer the newest first).
TABLE_DUMPS = {
    "resources": "SELECT * FROM resources ORDER BY id",
    "scopes": "SELECT * FROM scopes ORDER BY id",
    "spans": "SELECT rowid, * FROM spans ORDER BY rowid",
    "traces": "SELECT * FROM traces ORDER BY seq",
    "span_attributes": "SELECT * FROM span_attributes ORDER BY 1, 2, 3",
    "resource_attributes": "SELECT * FROM resource_attributes ORDER BY 1, 2, 3",
}
INT64 = 2**63


def stored_rows(requests: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table after inserting `requests` into a new database, in rowid/key order."""
    database = SpanDatabase(":memory:")
    try:
        for request in requests:
            if isinstance(request, list):  # the store's own path: ingest_batch groups
                database.insert_groups(request)
            else:
                database.insert(request)
        connection = database._connection
        return {table: connection.execute(sql).fetchall() for table, sql in TABLE_DUMPS.items()}
    finally:
        database.close()


def reference_request(body: bytes) -> Any:
    """The reference path: json_format after the ids are rewritten (no fast decoder), ids checked."""
    request = parse_otlp_json_document(json.loads(body))
    check_ids(request)
    return request


def assert_stores_as_the_reference(bodies: list[bytes]) -> None:
    outcomes = []
    for decode in (lambda body: decode_export_batch(body, JSON), reference_request):
        try:
            outcomes.append(stored_rows([decode(body) for body in bodies]))
        except BadRequest:
            outcomes.append("rejected")
        except Exception as error:  # a bug of both paths (json_format: `"kind": 1e400`), alike in both
            outcomes.append(f"raised {type(error).__name__}")
    assert outcomes[0] == outcomes[1]


# ----------------------------------------------------------------------------------------- strategies


@st.composite
def field(draw: st.DrawFn, camel: str, canonical: bool) -> str:
    """The JSON name, or (not canonical) maybe the proto field name json_format also accepts."""
    snake = "".join(f"_{char.lower()}" if char.isupper() else char for char in camel)
    return camel if canonical else draw(st.sampled_from([camel, snake]))


def integer_text(canonical: bool, low: int, high: int) -> st.SearchStrategy[Any]:
    numbers = st.integers(min_value=low, max_value=high)
    return st.one_of(numbers, numbers.map(str))


def uint32(canonical: bool) -> st.SearchStrategy[Any]:
    numbers = st.integers(min_value=0, max_value=2**32 - 1)
    return numbers if canonical else st.one_of(numbers, numbers.map(str))


def enum(canonical: bool, names: list[str]) -> st.SearchStrategy[Any]:
    numbers = st.integers(min_value=0, max_value=len(names) - 1)
    return numbers if canonical else st.one_of(numbers, st.sampled_from(names))


texts = st.text(max_size=8)


def any_values(canonical: bool) -> st.SearchStrategy[dict[str, Any]]:
    doubles = st.one_of(
        st.floats(allow_nan=False, allow_infinity=False),
        st.integers(min_value=-(2**53), max_value=2**53),
        st.sampled_from(["NaN", "Infinity", "-Infinity"]),
    )
    scalars = st.one_of(
        st.just({}),
        st.builds(lambda text: {"stringValue": text}, texts),
        st.builds(lambda number: {"intValue": number}, integer_text(canonical, -INT64, INT64 - 1)),
        st.builds(lambda flag: {"boolValue": flag}, st.booleans()),
        st.builds(lambda number: {"doubleValue": number}, doubles),
        st.builds(lambda data: {"bytesValue": base64.b64encode(data).decode()}, st.binary(max_size=8)),
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.builds(lambda items: {"arrayValue": {"values": items}}, st.lists(children, max_size=3)),
            st.builds(
                lambda items: {"kvlistValue": {"values": [{"key": k, "value": v} for k, v in items]}},
                st.lists(st.tuples(texts, children), max_size=3),
            ),
        ),
        max_leaves=6,
    )


def attributes(canonical: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    pair = st.one_of(
        st.builds(lambda key, value: {"key": key, "value": value}, texts, any_values(canonical)),
        st.builds(lambda key: {"key": key}, texts),  # a key without a value
    )
    return st.lists(pair, max_size=4)


@st.composite
def optional_fields(draw: st.DrawFn, canonical: bool, fields: dict[str, st.SearchStrategy[Any]]) -> dict:
    """Each field present or absent, under one of its accepted names."""
    document = {}
    for camel, strategy in fields.items():
        if draw(st.booleans()):
            # Not canonical: now and then a JSON value of another type (null means "default" to
            # json_format; a number where a string belongs is an error), which the fast decoder must
            # leave to json_format.
            junk = not canonical and draw(st.integers(0, 9)) == 0
            document[draw(field(camel, canonical))] = draw(
                st.sampled_from([None, 0, ""]) if junk else strategy
            )
    return document


def hex_id(length: int) -> st.SearchStrategy[str]:
    ids = st.binary(min_size=length, max_size=length).map(bytes.hex)
    return st.one_of(ids, ids.map(str.upper))


@st.composite
def spans(draw: st.DrawFn, canonical: bool, trace_ids: list[str]) -> dict[str, Any]:
    span = {
        draw(field("traceId", canonical)): draw(st.sampled_from(trace_ids)),
        draw(field("spanId", canonical)): draw(hex_id(8)),
    }
    kinds = ["SPAN_KIND_UNSPECIFIED", "SPAN_KIND_INTERNAL", "SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"]
    codes = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]
    event = optional_fields(
        canonical,
        {
            "timeUnixNano": integer_text(canonical, 0, 2**64 - 1),
            "name": texts,
            "attributes": attributes(canonical),
            "droppedAttributesCount": uint32(canonical),
        },
    )
    link = st.builds(
        lambda ids, rest: {**ids, **rest},
        st.fixed_dictionaries({"traceId": hex_id(16), "spanId": hex_id(8)}),
        optional_fields(
            canonical,
            {
                "traceState": st.sampled_from(["", "a=1", "vendor=x,other=y"]),
                "attributes": attributes(canonical),
                "droppedAttributesCount": uint32(canonical),
                "flags": uint32(canonical),
            },
        ),
    )
    status = optional_fields(canonical, {"code": enum(canonical, codes), "message": texts})
    span |= draw(
        optional_fields(
            canonical,
            {
                "traceState": st.sampled_from(["", "a=1", "vendor=x,other=y"]),
                "parentSpanId": st.one_of(st.just(""), hex_id(8)),
                "flags": uint32(canonical),
                "name": texts,
                "kind": enum(canonical, kinds),
                "startTimeUnixNano": integer_text(canonical, 0, 2**64 - 1),
                "endTimeUnixNano": integer_text(canonical, 0, 2**64 - 1),
                "attributes": attributes(canonical),
                "droppedAttributesCount": uint32(canonical),
                "events": st.lists(event, max_size=2),
                "droppedEventsCount": uint32(canonical),
                "links": st.lists(link, max_size=2),
                "droppedLinksCount": uint32(canonical),
                "status": status,
            },
        )
    )
    return span


@st.composite
def documents(draw: st.DrawFn, canonical: bool) -> dict[str, Any]:
    trace_ids = draw(st.lists(hex_id(16), min_size=1, max_size=3))
    resource = optional_fields(
        canonical, {"attributes": attributes(canonical), "droppedAttributesCount": uint32(canonical)}
    )
    scope = optional_fields(
        canonical,
        {
            "name": texts,
            "version": texts,
            "attributes": attributes(canonical),
            "droppedAttributesCount": uint32(canonical),
        },
    )
    schema = st.sampled_from(["", "https://opentelemetry.io/schemas/1.21.0"])
    scope_spans = st.builds(
        lambda head, items: {**head, "spans": items},
        optional_fields(canonical, {"scope": scope, "schemaUrl": schema}),
        st.lists(spans(canonical, trace_ids), max_size=3),
    )
    resource_spans = st.builds(
        lambda head, items: {**head, draw(field("scopeSpans", canonical)): items},
        optional_fields(canonical, {"resource": resource, "schemaUrl": schema}),
        st.lists(scope_spans, max_size=2),
    )
    return {draw(field("resourceSpans", canonical)): draw(st.lists(resource_spans, max_size=2))}


def _has_an_all_zero_id(document: dict[str, Any]) -> bool:
    return any(
        set(span[key]) == {"0"}
        for resource_spans in document["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
        for key in ("traceId", "spanId")
    )


def _dumps(document: Any) -> bytes:
    return json.dumps(document).encode()  # NaN stays out: doubles are finite or the OTLP strings


# -------------------------------------------------------------------------------------------- tests


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(canonical=True), documents(canonical=True))
def test_canonical_documents_are_decoded_fast_and_stored_as_the_reference_stores_them(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    # The fast decoder takes them itself (else this would only test json_format against itself).
    otlp_json_fast.decode(copy.deepcopy(first))
    try:
        otlp_json_fast.decode_batch(copy.deepcopy(first))
    except otlp_json_fast.NotCanonical:  # left to json_format to reject in its words, only for this
        assert _has_an_all_zero_id(first)
    # Two requests: the second repeats resources, scopes and maybe spans (an exporter's retry).
    assert_stores_as_the_reference([_dumps(first), _dumps(second), _dumps(first)])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(canonical=False))
def test_every_accepted_form_is_stored_as_the_reference_stores_it(document: dict[str, Any]) -> None:
    assert_stores_as_the_reference([_dumps(document)])


def test_the_recorded_spans_are_decoded_fast_and_stored_as_the_reference_stores_them() -> None:
    spans = sdk_spans()
    bodies = [encode_spans_json(spans[start : start + 9]) for start in range(0, len(spans), 9)]
    for body in bodies:
        otlp_json_fast.decode(json.loads(body))
    assert_stores_as_the_reference(bodies)
    rows = stored_rows([decode_export_request(body, JSON) for body in bodies])
    assert len(rows["spans"]) == len({(s.context.trace_id, s.context.span_id) for s in spans})


def test_json_values_of_another_type_are_left_to_json_format() -> None:
    """Every span field with null, a number, a string, false, a list or an object: stored or rejected as
    json_format does (the first fast decoder stored `"parentSpanId": 0` as a root span; the reference
    rejects it)."""
    span = {"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "2"}
    for name in sorted(otlp_json_fast.SPAN_FIELD_NAMES):
        for value in (None, 0, 1, "", "x", False, [], {}):
            document = {"resourceSpans": [{"scopeSpans": [{"spans": [{**span, name: value}]}]}]}
            assert_stores_as_the_reference([_dumps(document)])


# Number literals where orjson and json.loads part: integers beyond 64 bits (orjson reads them as floats),
# beyond float range (orjson refuses them, json.loads gives an int or inf), NaN and Infinity literals
# (orjson refuses them), and the ordinary forms around them.
NUMBER_LITERALS = [
    "0",
    "-1",
    "1.5",
    "2e0",
    "-0.0",
    "1E2",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551615",
    "18446744073709551616",
    "1" + "0" * 30,
    "1e400",
    "-1e400",
    "1" + "0" * 400,
    "NaN",
    "Infinity",
    "-Infinity",
]
NUMBER_FIELDS = ["intValue", "doubleValue", "startTimeUnixNano", "kind", "flags", "droppedAttributesCount"]


def test_json_that_orjson_reads_otherwise_is_stored_as_json_loads_reads_it() -> None:
    """The store parses with orjson; where orjson refuses a body or reads a number otherwise than
    json.loads (the reference path's parser), the outcome must still be the reference's. Every
    combination, not a sample: the one that tells (an int64 of -2**63-1, which orjson rounds to the
    float -2**63, in range) is one of 456."""
    for field_name in NUMBER_FIELDS:
        for literal in NUMBER_LITERALS:
            for escape in ("", "\\ud800", "\\udfff\\ud800", "\\u00e9"):
                span = {"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "2", "name": "PLACEHOLDER_NAME"}
                if field_name in ("intValue", "doubleValue"):
                    span["attributes"] = [{"key": "n", "value": {field_name: "PLACEHOLDER_NUMBER"}}]
                else:
                    span[field_name] = "PLACEHOLDER_NUMBER"
                document = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
                text = _dumps(document).decode().replace('"PLACEHOLDER_NUMBER"', literal)
                text = text.replace("PLACEHOLDER_NAME", f"n{escape}")
                assert_stores_as_the_reference([text.encode()])


def test_bodies_orjson_refuses_are_parsed_as_json_loads_parses_them() -> None:
    document = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "2"}]}]}
        ]
    }
    text = json.dumps(document)
    for body in (text.encode("utf-16"), text.encode("utf-32"), b"\xef\xbb\xbf" + text.encode()):
        assert_stores_as_the_reference([body])
        assert len(stored_rows([decode_export_request(body, JSON)])["spans"]) == 1
    with pytest.raises(BadRequest, match="body is not valid JSON: Expecting property name"):
        decode_export_request(b"{", JSON)  # json.loads's words
