"""Our `tracestate` edge: the current W3C key grammar, the W3C harness's rules, the specification's limits.

The official harness (github.com/w3c/trace-context, `test/test.py`, strict level 2) discards the WHOLE header
for one invalid member or a 33rd member, and accepts keeping one entry of a duplicated key. OpenTelemetry
Python's own parser gets two of these wrong, and the tests below show which: it drops the whole header for a
duplicate, and it refuses keys of the current grammar (`foo@@bar`, a system part over 14 characters).
"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.propagate import get_global_textmap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

from services.telemetry.propagation import use_w3c_tracestate
from services.telemetry.tracestate import (
    MAX_HEADER_LENGTH,
    W3CTraceContextPropagator,
    W3CTraceState,
    parse_tracestate,
    truncate,
)

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        # The current key grammar: `@` anywhere but first, more than one, a system part over 14 characters.
        ("a@b@c=1,bar=2", [("a@b@c", "1"), ("bar", "2")]),
        ("foo@@bar=1,bar=2", [("foo@@bar", "1"), ("bar", "2")]),
        ("foo@=1,bar=2", [("foo@", "1"), ("bar", "2")]),
        ("tenant@a-very-long-system-name=x,bar=2", [("tenant@a-very-long-system-name", "x"), ("bar", "2")]),
        ("1st=x,bar=2", [("1st", "x"), ("bar", "2")]),
        # Optional whitespace around members, empty members, a value with inner spaces.
        ("foo=1 \t , \t bar=2,, ,baz=a b", [("foo", "1"), ("bar", "2"), ("baz", "a b")]),
        ("", []),
    ],
)
def test_valid_headers_are_kept_in_order(header: str, kept: list[tuple[str, str]]):
    assert parse_tracestate([header]) == kept


# The four cases the W3C harness (strict level 2) checks, and their neighbours: one invalid member
# discards the whole header, its valid members included.
def test_a_key_of_257_characters_discards_the_whole_header():
    assert parse_tracestate(["foo=1", "z" * 256 + "=1"]) == [("foo", "1"), ("z" * 256, "1")]
    assert parse_tracestate(["foo=1", "z" * 257 + "=1"]) == []


def test_a_key_starting_with_at_discards_the_whole_header():
    assert parse_tracestate(["@foo=1,bar=2"]) == []


def test_a_value_holding_an_equals_sign_discards_the_whole_header():
    assert parse_tracestate(["foo=bar=baz"]) == []
    assert parse_tracestate(["bar=2,foo=a=b"]) == []


def test_33_members_discard_the_whole_header_32_are_kept():
    members = [f"bar{i:02d}={i:02d}" for i in range(1, 34)]
    assert len(parse_tracestate([",".join(members[:32])])) == 32
    assert parse_tracestate([",".join(members[:10]), ",".join(members[10:])]) == []


@pytest.mark.parametrize(
    "header",
    [
        "FOO=1,bar=2",
        "foo.bar=1,bar=2",
        "foo =1,bar=2",
        "foo=,bar=2",
        "no-equals,bar=2",
        "bar=2,foo=bad\x7fvalue",
    ],
)
def test_any_other_invalid_member_discards_the_whole_header(header: str):
    assert parse_tracestate([header]) == []


def test_duplicate_keys_keep_the_leftmost_entry():
    # The harness accepts keeping both or dropping one; the leftmost is the most recent position.
    assert parse_tracestate(["foo=1,bar=2,foo=3"]) == [("foo", "1"), ("bar", "2")]
    assert parse_tracestate(["foo=1", "foo=2"]) == [("foo", "1")]


@pytest.mark.parametrize("header", ["foo=1,bar=2,foo=3", "foo@@bar=1,bar=2", "t@vvvvvvvvvvvvvvv=1,bar=2"])
def test_the_library_parser_drops_headers_the_harness_expects_kept(header: str):
    # Why this module exists (OpenTelemetry Python 1.45): a duplicate or a current-grammar key costs
    # every vendor its entry.
    assert len(TraceState.from_header([header])) == 0
    assert ("bar", "2") in parse_tracestate([header])


def test_several_header_fields_are_one_list_in_order():
    assert parse_tracestate(["foo=1,bar=2", "", "rojo=1,foo=9"]) == [
        ("foo", "1"),
        ("bar", "2"),
        ("rojo", "1"),
    ]


def test_over_512_characters_long_entries_go_first_then_from_the_end():
    long_entry = ("long", "x" * 200)
    short = [(f"s{i:02d}", "y" * 20) for i in range(20)]  # 20 * 24 + commas = 499 characters
    kept = truncate([short[0], long_entry, *short[1:]])
    assert long_entry not in kept and kept == short
    kept = truncate([(f"s{i:02d}", "y" * 30) for i in range(20)])  # 20 * 34 + commas = 699 characters
    assert len(",".join(f"{k}={v}" for k, v in kept)) <= MAX_HEADER_LENGTH
    assert [k for k, _ in kept] == [f"s{i:02d}" for i in range(len(kept))]


def test_propagator_keeps_members_through_extract_and_inject():
    propagator = W3CTraceContextPropagator()
    context = propagator.extract({"traceparent": TRACEPARENT, "tracestate": "a@b@c=1,foo=3,foo=4"})
    parent = trace.get_current_span(context).get_span_context()
    assert parent.is_valid and f"{parent.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert isinstance(parent.trace_state, W3CTraceState)
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context)
    assert carrier["traceparent"] == TRACEPARENT
    assert carrier["tracestate"] == "a@b@c=1,foo=3"


def test_propagator_discards_a_header_with_one_invalid_member():
    propagator = W3CTraceContextPropagator()
    context = propagator.extract({"traceparent": TRACEPARENT, "tracestate": "a@b@c=1,bad KEY=2,foo=3"})
    parent = trace.get_current_span(context).get_span_context()
    assert parent.is_valid and len(parent.trace_state) == 0
    carrier: dict[str, str] = {}
    propagator.inject(carrier, context)
    assert carrier["traceparent"] == TRACEPARENT and "tracestate" not in carrier


def test_no_tracestate_is_read_without_a_valid_traceparent():
    context = W3CTraceContextPropagator().extract({"traceparent": "00-bad", "tracestate": "foo=1"})
    assert not trace.get_current_span(context).get_span_context().is_valid


def test_a_child_span_carries_the_parents_trace_state_on(spans):
    context = W3CTraceContextPropagator().extract({"traceparent": TRACEPARENT, "tracestate": "a@b@c=1"})
    with trace.get_tracer("test").start_as_current_span("child", context=context) as span:
        carrier: dict[str, str] = {}
        W3CTraceContextPropagator().inject(carrier)
    assert span.get_span_context().trace_state.to_header() == "a@b@c=1"
    assert carrier["tracestate"] == "a@b@c=1"


def test_mutations_keep_the_current_grammar():
    state = W3CTraceState([("a@b@c", "1"), ("foo", "2")])
    assert state.update("foo", "3").to_header() == "foo=3,a@b@c=1"
    assert state.add("new@x@y", "4").to_header() == "new@x@y=4,a@b@c=1,foo=2"
    assert state.delete("foo").to_header() == "a@b@c=1"
    assert W3CTraceState([("BAD", "1"), ("ok", "2"), ("ok", "3")]).to_header() == "ok=2"


def test_installed_into_the_global_propagator_next_to_baggage(monkeypatch):
    from opentelemetry import propagate
    from opentelemetry.baggage.propagation import W3CBaggagePropagator

    monkeypatch.setattr(
        propagate,
        "_HTTP_TEXT_FORMAT",
        CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()]),
    )
    use_w3c_tracestate()
    members = get_global_textmap()._propagators  # type: ignore[attr-defined]
    assert [type(m) for m in members] == [W3CTraceContextPropagator, W3CBaggagePropagator]
    installed = get_global_textmap()
    use_w3c_tracestate()  # idempotent: nothing replaced twice
    assert get_global_textmap() is installed
