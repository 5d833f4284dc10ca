"""W3C `tracestate`, parsed member by member as the specification asks.

OpenTelemetry Python's parser (`TraceState.from_header`, 1.45) throws the WHOLE header away when one
member is a duplicate or does not match its key pattern, and that pattern is the older grammar (one `@`
between a tenant and a system id of at most 14 characters). The W3C Trace Context text today says:

    key      = ( lcalpha / DIGIT ) 0*255 ( keychar )
    keychar  = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
    value    = 0*255( chr ) nblk-chr      ; chr = %x20 / nblk-chr
    nblk-chr = %x21-2B / %x2D-3C / %x3E-7E

and says a vendor MAY discard the entire header when it cannot be parsed. The official W3C test harness
(github.com/w3c/trace-context, `test/`, strict level 2) requires exactly that: one invalid member (a key of
257 characters, a key starting with `@`, a value holding `=`, ...) or more than 32 members and the WHOLE
`tracestate` is discarded. A duplicate key is the one case the harness lets a vendor repair: we keep the
leftmost entry (the most recent position) and drop its repeats, where the library drops everything.
`parse_tracestate` implements that and the specification's truncation rule for long headers;
`W3CTraceState` carries the result through the SDK (OpenTelemetry's own `TraceState` would re-validate it
with the old grammar), and `W3CTraceContextPropagator` uses both.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Getter, default_getter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.trace.span import TraceState

MAX_MEMBERS = 32
# "Vendors SHOULD propagate at least 512 characters of a combined header": our limit, documented.
MAX_HEADER_LENGTH = 512
# Entries longer than this are the first to go when the header must be cut (the specification's rule).
LONG_MEMBER = 128

_KEY = re.compile(r"[a-z0-9][a-z0-9_\-*/@]{0,255}")
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_OWS = " \t"

TRACESTATE_HEADER = "tracestate"


def is_valid_member(key: str, value: str) -> bool:
    return _KEY.fullmatch(key) is not None and _VALUE.fullmatch(value) is not None


def parse_tracestate(headers: Iterable[str]) -> list[tuple[str, str]]:
    """The members of one or more `tracestate` header values, in order, cut to the length limit; no members
    at all when any member is invalid or there are more than MAX_MEMBERS of them (the header is discarded
    whole, as the W3C harness requires). Repeats of a key are dropped; the leftmost entry wins."""
    members: list[tuple[str, str]] = []
    seen: set[str] = set()
    count = 0
    for header in headers:
        for raw in header.split(","):
            member = raw.strip(_OWS)
            if not member:  # empty members are allowed (e.g. from joining headers) and mean nothing
                continue
            key, equals, value = member.partition("=")
            count += 1
            if not equals or not is_valid_member(key, value) or count > MAX_MEMBERS:
                return []
            if key in seen:
                continue
            seen.add(key)
            members.append((key, value))
    return truncate(members)


def truncate(members: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """At most MAX_MEMBERS members and MAX_HEADER_LENGTH characters, cutting whole entries only:
    entries over LONG_MEMBER characters go first, then entries from the end (W3C Trace Context)."""
    kept = list(members[:MAX_MEMBERS])
    if _header_length(kept) <= MAX_HEADER_LENGTH:
        return kept
    for index in reversed(range(len(kept))):
        if _member_length(kept[index]) > LONG_MEMBER:
            del kept[index]
            if _header_length(kept) <= MAX_HEADER_LENGTH:
                return kept
    while kept and _header_length(kept) > MAX_HEADER_LENGTH:
        kept.pop()
    return kept


def _member_length(member: tuple[str, str]) -> int:
    return len(member[0]) + 1 + len(member[1])


def _header_length(members: Sequence[tuple[str, str]]) -> int:
    return sum(_member_length(member) for member in members) + max(0, len(members) - 1)


class W3CTraceState(TraceState):
    """A TraceState whose members were validated by `parse_tracestate` (the current key grammar).

    The SDK hands a parent's trace state to its children unchanged, and the W3C propagator writes it with
    `to_header()`, so members with the newer keys travel on. The mutators return this class too, with the
    same validation, instead of the base class (which would drop such members again).
    """

    def __init__(self, entries: Sequence[tuple[str, str]] | None = None) -> None:
        super().__init__()
        members: dict[str, str] = {}
        for key, value in entries or ():
            if is_valid_member(key, value) and key not in members:
                members[key] = value
        self._members = dict(truncate(list(members.items())))

    def __getitem__(self, key: str) -> str:
        return self._members[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, item: object) -> bool:
        return item in self._members

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._members.items())!r})"

    def keys(self):
        return self._members.keys()

    def items(self):
        return self._members.items()

    def values(self):
        return self._members.values()

    def to_header(self) -> str:
        return ",".join(f"{key}={value}" for key, value in self._members.items())

    def add(self, key: str, value: str) -> W3CTraceState:
        if key in self._members:
            return self
        return W3CTraceState([(key, value), *self._members.items()])

    def update(self, key: str, value: str) -> W3CTraceState:
        # A modified member moves to the front (the most recent position).
        rest = [(k, v) for k, v in self._members.items() if k != key]
        return W3CTraceState([(key, value), *rest]) if key in self._members else self

    def delete(self, key: str) -> W3CTraceState:
        return W3CTraceState([(k, v) for k, v in self._members.items() if k != key])


class _HideTracestate(Getter[CarrierT]):
    """Lets the library parse `traceparent` (its version rules) but never see `tracestate`."""

    def __init__(self, inner: Getter[CarrierT]) -> None:
        self._inner = inner

    def get(self, carrier: CarrierT, key: str) -> list[str] | None:
        return None if key.lower() == TRACESTATE_HEADER else self._inner.get(carrier, key)

    def keys(self, carrier: CarrierT) -> list[str]:
        return [key for key in self._inner.keys(carrier) if key.lower() != TRACESTATE_HEADER]


class W3CTraceContextPropagator(TraceContextTextMapPropagator):
    """The library's W3C propagator with our member-by-member `tracestate` parsing on extract.

    Inject is unchanged: it writes `span_context.trace_state.to_header()`, which a W3CTraceState renders.
    """

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = default_getter
    ) -> Context:
        extracted = super().extract(carrier, context, getter=_HideTracestate(getter))
        parent = trace.get_current_span(extracted).get_span_context()
        # "If the vendor failed to parse traceparent, it MUST NOT attempt to parse tracestate."
        if not parent.is_valid:
            return extracted
        headers = getter.get(carrier, TRACESTATE_HEADER)
        with_state = trace.SpanContext(
            trace_id=parent.trace_id,
            span_id=parent.span_id,
            is_remote=True,
            trace_flags=parent.trace_flags,
            # Most requests carry no tracestate: they share one empty state (its mutators return new ones).
            trace_state=W3CTraceState(parse_tracestate(headers)) if headers else _NO_MEMBERS,
        )
        return trace.set_span_in_context(trace.NonRecordingSpan(with_state), context)


_NO_MEMBERS = W3CTraceState()
