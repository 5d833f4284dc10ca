"""LeanTracerProvider makes exactly the spans the SDK's TracerProvider makes (differential, hypothesis).

Each example is a random program of API calls — spans started with every kind of parent (none, the
current span, an explicit local span, a remote parent sampled or not, with trace state and baggage),
attributes of every type including invalid keys and values, events, links (valid and invalid), status
(both forms), update_name, record_exception, context-manager spans that raise, double end, calls on
ended spans — run once through the SDK and once through ours, with the same sampler, span limits
(OTEL_* variables), deterministic ids and clock. What reaches the exporter, the processors' calls and
every value the program observes (is_recording, span contexts, exceptions) must be identical.
"""

from __future__ import annotations

import os
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, context, trace
from opentelemetry.processor.baggage import BaggageSpanProcessor
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import sampling as samplers
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from services.telemetry.lean_tracer import LeanTracer, LeanTracerProvider

LIMIT_VARIABLES = (
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
)

SAMPLERS = {
    "parentbased_always_on": samplers.DEFAULT_ON,  # the default, decided inline by LeanTracer
    "always_on": samplers.ALWAYS_ON,
    "always_off": samplers.ALWAYS_OFF,
    "parentbased_always_off": samplers.DEFAULT_OFF,
    "parentbased_traceidratio": samplers.ParentBased(samplers.TraceIdRatioBased(0.5)),
    "traceidratio": samplers.TraceIdRatioBased(0.25),
}


class Describable:
    """A value of no attribute type whose str() is custom (the SDK then records str(value))."""

    def __str__(self) -> str:
        return "described"


class CountingIds(IdGenerator):
    """The same ids in both runs."""

    def __init__(self, random_trace_ids: bool) -> None:
        self.next_id, self.random_trace_ids = 0, random_trace_ids

    def generate_span_id(self) -> int:
        self.next_id += 1
        return self.next_id * 7919

    def generate_trace_id(self) -> int:
        self.next_id += 1
        return self.next_id * 2**70 + 12345

    def is_trace_id_random(self) -> bool:
        return self.random_trace_ids


class RecordingProcessor(SpanProcessor):
    """Records which hook saw which span, in order."""

    def __init__(self, calls: list) -> None:
        self.calls = calls

    def on_start(self, span, parent_context=None) -> None:
        self.calls.append(("on_start", span.name, span.is_recording()))

    def _on_ending(self, span) -> None:
        self.calls.append(("_on_ending", span.name))

    def on_end(self, span) -> None:
        self.calls.append(("on_end", span.name, span.end_time is not None))


scalars = st.one_of(
    st.text(max_size=8),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=4),
    st.none(),
)
values = st.one_of(
    scalars,
    st.lists(st.text(max_size=4), max_size=3),
    st.lists(st.integers(-5, 5), max_size=3).map(tuple),
    st.lists(scalars, max_size=3),  # mixed types: the SDK keeps what it keeps
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
    st.just(Describable()),
    st.just(object()),  # no custom str: dropped
    st.sampled_from([SpanKind.SERVER, StatusCode.ERROR]),  # enums: str subclasses or not
)
keys = st.one_of(st.sampled_from(["a", "b", "http.route", "k"]), st.text(max_size=6))
attribute_maps = st.dictionaries(st.one_of(keys, st.integers(0, 3)), values, max_size=4)
names = st.text(max_size=10)
timestamps = st.one_of(st.none(), st.integers(min_value=0, max_value=2**63 - 1))
remote_parents = st.tuples(
    st.integers(min_value=0, max_value=2**128 - 1),  # 0: an invalid trace id
    st.integers(min_value=0, max_value=2**64 - 1),
    st.booleans(),  # sampled
    st.booleans(),  # random-trace-id flag
    st.lists(st.tuples(st.sampled_from(["ro", "vendor", "a1"]), st.sampled_from(["1", "x-y"])), max_size=2),
    st.dictionaries(
        st.sampled_from(["tracehop.tenant", "other"]), st.sampled_from(["acme", "z"]), max_size=2
    ),
)
parents = st.one_of(
    st.just(("current",)),
    st.just(("root",)),
    st.tuples(st.just("span"), st.integers(0, 20)),
    st.tuples(st.just("remote"), remote_parents),
)
link_targets = st.one_of(
    st.tuples(st.just("span"), st.integers(0, 20)),
    st.tuples(st.just("remote"), remote_parents),
    st.just(("invalid",)),
)
span_ref = st.integers(0, 20)
operations = st.one_of(
    st.tuples(
        st.just("start"),
        names,
        st.sampled_from(list(SpanKind)),
        parents,
        st.one_of(st.none(), attribute_maps),
        st.lists(st.tuples(link_targets, st.one_of(st.none(), attribute_maps)), max_size=2),
        timestamps,
        st.booleans(),
        st.booleans(),
    ),
    st.tuples(st.just("set_attribute"), span_ref, st.one_of(keys, st.integers(0, 2), st.none()), values),
    st.tuples(st.just("set_attributes"), span_ref, attribute_maps),
    st.tuples(st.just("add_event"), span_ref, names, st.one_of(st.none(), attribute_maps), timestamps),
    st.tuples(st.just("add_link"), span_ref, link_targets, st.one_of(st.none(), attribute_maps)),
    st.tuples(
        st.just("set_status"),
        span_ref,
        st.sampled_from(["status", "code"]),
        st.sampled_from(list(StatusCode)),
        st.one_of(st.none(), st.text(max_size=5)),
    ),
    st.tuples(st.just("update_name"), span_ref, names),
    st.tuples(st.just("record_exception"), span_ref, st.text(max_size=5), attribute_maps, st.booleans()),
    st.tuples(st.just("end"), span_ref, timestamps),
    st.tuples(st.just("is_recording"), span_ref),
    st.tuples(st.just("cm"), names, st.booleans(), st.booleans(), st.booleans(), values),
)
programs = st.lists(operations, max_size=25)
limits = st.fixed_dictionaries({}, optional={name: st.integers(0, 4).map(str) for name in LIMIT_VARIABLES})


def remote_context(spec: tuple, base: context.Context | None = None) -> context.Context:
    trace_id, span_id, sampled, random_flag, state, entries = spec
    flags = (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random_flag else 0)
    parent = SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags), trace_state=TraceState(state)
    )
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(parent), base)
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    return ctx


def context_tuple(span_context: SpanContext | None) -> tuple | None:
    if span_context is None:
        return None
    return (
        span_context.trace_id,
        span_context.span_id,
        span_context.is_remote,
        int(span_context.trace_flags),
        span_context.trace_state.to_header(),
    )


def attribute_items(attributes: Any) -> list:
    return [(key, repr(value)) for key, value in (attributes or {}).items()]


def exported_shape(span: sdk_trace.ReadableSpan) -> tuple:
    """Everything an exporter can read from a span (repr: NaN must equal NaN)."""
    scope = span.instrumentation_scope
    return (
        span.name,
        context_tuple(span.context),
        context_tuple(span.parent),
        span.kind,
        span.start_time,
        span.end_time,
        span.status.status_code,
        span.status.description,
        attribute_items(span.attributes),
        span.dropped_attributes,
        [(e.name, e.timestamp, attribute_items(e.attributes), e.dropped_attributes) for e in span.events],
        span.dropped_events,
        [
            (context_tuple(li.context), attribute_items(li.attributes), li.dropped_attributes)
            for li in span.links
        ],
        span.dropped_links,
        sorted(span.resource.attributes.items()),
        span.resource.schema_url,
        (scope.name, scope.version, scope.schema_url, attribute_items(scope.attributes)),
    )


def run(program: list, provider_class: type, sampler_name: str, random_ids: bool, env: dict) -> tuple:
    """Run `program` against a fresh provider of `provider_class`; what it observed and exported."""
    observed: list = []
    clock = iter(range(10**6, 10**9, 1000))
    with mock.patch.dict(os.environ, env), mock.patch.object(sdk_trace, "time_ns", lambda: next(clock)):
        for name in LIMIT_VARIABLES:
            if name not in env:
                os.environ.pop(name, None)
        exporter = InMemorySpanExporter()
        provider = provider_class(
            sampler=SAMPLERS[sampler_name], id_generator=CountingIds(random_ids), shutdown_on_exit=False
        )
        provider.add_span_processor(BaggageSpanProcessor(lambda key: key.startswith("tracehop.")))
        provider.add_span_processor(RecordingProcessor(observed))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("differential", "1.0", "https://example.org/schema", {"scope.attr": 1})
        spans: list = []
        for operation in program:
            try:
                observed.append(("result", apply(operation, tracer, spans)))
            except Exception as exc:  # the SDK raises for some calls: ours must raise the same
                observed.append(("raised", type(exc).__name__, str(exc)))
        for span in spans:
            observed.append(("final", context_tuple(span.get_span_context()), span.is_recording()))
        return observed, [exported_shape(span) for span in exporter.get_finished_spans()], tracer


def apply(operation: tuple, tracer: trace.Tracer, spans: list) -> Any:
    kind, *args = operation
    if kind == "start":
        name, span_kind, parent, attributes, links, start_time, record_exception, set_status = args
        span = tracer.start_span(
            name,
            context=parent_context(parent, spans),
            kind=span_kind,
            attributes=attributes,
            links=[Link(link_context(target, spans), attrs) for target, attrs in links],
            start_time=start_time,
            record_exception=record_exception,
            set_status_on_exception=set_status,
        )
        spans.append(span)
        return context_tuple(span.get_span_context()), span.is_recording(), isinstance(span, sdk_trace.Span)
    if kind == "cm":
        name, raises, record_exception, set_status, value = args
        with tracer.start_as_current_span(
            name, record_exception=record_exception, set_status_on_exception=set_status
        ) as span:
            span.set_attribute("in.cm", value)
            child = tracer.start_span(name + ".child")  # parent: the current span
            spans.extend([span, child])
            child.end()
            if raises:
                raise ValueError(f"failed in {name}")
        return context_tuple(span.get_span_context())
    if not spans:
        return None
    span = spans[args[0] % len(spans)]
    if kind == "set_attribute":
        span.set_attribute(args[1], args[2])
    elif kind == "set_attributes":
        span.set_attributes(args[1])
    elif kind == "add_event":
        span.add_event(args[1], args[2], args[3])
    elif kind == "add_link":
        span.add_link(link_context(args[1], spans), args[2])
    elif kind == "set_status":
        form, code, description = args[1:]
        if form == "status":
            span.set_status(Status(code, description))
        else:
            span.set_status(code, description)
    elif kind == "update_name":
        span.update_name(args[1])
    elif kind == "record_exception":
        try:
            raise KeyError(args[1])
        except KeyError as exc:
            span.record_exception(exc, attributes=args[2], escaped=args[3])
    elif kind == "end":
        span.end(args[1])
    elif kind == "is_recording":
        return span.is_recording()
    return None


def parent_context(parent: tuple, spans: list) -> context.Context | None:
    if parent[0] == "current":
        return None
    if parent[0] == "root":
        return context.Context()
    if parent[0] == "span":
        return trace.set_span_in_context(spans[parent[1] % len(spans)]) if spans else None
    return remote_context(parent[1])


def link_context(target: tuple, spans: list) -> SpanContext:
    if target[0] == "span" and spans:
        return spans[target[1] % len(spans)].get_span_context()
    if target[0] == "remote":
        return trace.get_current_span(remote_context(target[1])).get_span_context()
    return trace.INVALID_SPAN_CONTEXT


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    program=programs,
    sampler_name=st.sampled_from(sorted(SAMPLERS)),
    random_ids=st.booleans(),
    env=limits,
)
def test_lean_tracer_exports_what_the_sdk_exports(program, sampler_name, random_ids, env) -> None:
    sdk_observed, sdk_spans, sdk_tracer = run(program, TracerProvider, sampler_name, random_ids, env)
    lean_observed, lean_spans, lean_tracer = run(program, LeanTracerProvider, sampler_name, random_ids, env)
    assert type(lean_tracer) is LeanTracer and type(sdk_tracer) is sdk_trace.Tracer
    assert lean_observed == sdk_observed
    assert lean_spans == sdk_spans


TIGHT_LIMITS = {
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT": "3",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "2",
    "OTEL_SPAN_EVENT_COUNT_LIMIT": "1",
    "OTEL_SPAN_LINK_COUNT_LIMIT": "1",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT": "1",
}


@pytest.mark.parametrize("env", [{}, TIGHT_LIMITS, {"OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT": "0"}])
def test_a_typical_request_is_compared_too(env: dict) -> None:
    """A fixed program shaped like users' POST (remote sampled parent, server span, children with
    attributes and a log event, a Redis-like client span), so the comparison never depends on luck:
    at the default limits and at limits every span here exceeds."""
    remote = ("remote", (0xABC, 0xDEF, True, True, [("vendor", "1")], {"tracehop.tenant": "acme"}))
    program = [
        (
            "start",
            "POST /users",
            SpanKind.SERVER,
            remote,
            {"http.request.method": "POST"},
            [],
            None,
            True,
            True,
        ),
        ("set_attribute", 0, "http.route", "/users"),
        ("start", "auth_check", SpanKind.INTERNAL, ("span", 0), None, [], None, True, True),
        ("set_attributes", 1, {"auth.method": "service_token", "auth.token_present": True}),
        ("end", 1, None),
        ("start", "INCRBY", SpanKind.CLIENT, ("span", 0), {"db.system.name": "redis"}, [], None, True, True),
        ("add_event", 2, "user created", {"log.severity": "INFO", "user_id": 10}, None),
        ("end", 2, None),
        ("cm", "serialize", False, True, True, 42),
        ("set_status", 0, "code", StatusCode.ERROR, "boom"),
        ("end", 0, None),
        ("end", 0, None),
        ("set_attribute", 0, "late", 1),
        (
            "start",
            "HSET",
            SpanKind.CLIENT,
            ("span", 0),
            None,
            [(("span", 0), {"a": 1}), (remote, None)],
            5,
            1,
            1,
        ),
        ("set_attribute", 5, "db.query.text", "HSET ? ? ?"),
        ("set_attribute", 5, "db.namespace", 0),
        ("set_attribute", 5, "server.port", 6379),
        ("set_attribute", 5, "ok", True),
        ("set_attribute", 5, "ratio", 0.5),
        ("add_event", 5, "first", {"a": "long value", "b": 2}, None),
        ("add_event", 5, "second", None, 7),
        ("add_link", 5, ("span", 1), {"x": "y"}),
        ("end", 5, 99),
    ]
    sdk_observed, sdk_spans, _ = run(program, TracerProvider, "parentbased_always_on", True, env)
    lean_observed, lean_spans, _ = run(program, LeanTracerProvider, "parentbased_always_on", True, env)
    assert len(sdk_spans) == 6
    assert lean_observed == sdk_observed
    assert lean_spans == sdk_spans


@pytest.mark.parametrize("hook", ["on_start", "_on_ending", "on_end"])
def test_every_processor_that_implements_a_hook_is_called(hook: str) -> None:
    calls: list = []
    provider = LeanTracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    provider.add_span_processor(RecordingProcessor(calls))
    provider.get_tracer("t").start_span("s").end()
    assert [call[0] for call in calls].count(hook) == 1
