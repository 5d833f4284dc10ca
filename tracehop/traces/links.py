"""Span links between traces, followed both ways: what `make trace` shows after the waterfall.

A link is held by the span that makes it (the CONSUMER span of a job in link mode,
TRACEHOP_CELERY_SPAN_LINKS=1, holds a link to the PRODUCER span that published the job). From the job's
trace the link is read off its spans. From the request's trace there is nothing to read: no span there
knows the job's trace. Jaeger's query API cannot search by link either, so the incoming links are found
the way a person would: the traces that started in this trace's time window (and a while after: a job
may wait in the queue), of every service, whose spans link into this trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tracehop.traces.query import Span, TraceQuery

# How long after a trace a job linking to it may start (queueing, countdowns, retries with backoff).
LOOKAHEAD = timedelta(minutes=10)
# Traces searched per service and window, and traces followed in all: a long chain stays readable.
SEARCH_LIMIT = 50
MAX_FOLLOWED = 10


@dataclass(frozen=True)
class TraceLink:
    """`source` (a span of one trace) links to `target_trace_id`/`target_span_id` (a span of another)."""

    source: Span
    target_trace_id: str
    target_span_id: str


def outgoing_links(spans: Sequence[Span]) -> list[TraceLink]:
    """The links this trace's spans hold to spans of OTHER traces (a chord's links stay inside one trace)."""
    return [
        TraceLink(span, trace_id, span_id)
        for span in spans
        for trace_id, span_id in span.links
        if trace_id != span.trace_id
    ]


def incoming_links(query: TraceQuery, spans: Sequence[Span]) -> list[TraceLink]:
    """The links that spans of other traces hold into this trace, searched for in its time window."""
    if not spans:
        return []
    trace_id = spans[0].trace_id
    start = datetime.fromtimestamp(min(span.start_ns for span in spans) / 1e9, UTC) - timedelta(seconds=1)
    end = datetime.fromtimestamp(max(span.end_ns for span in spans) / 1e9, UTC) + LOOKAHEAD
    found: dict[tuple[str, str, str], TraceLink] = {}
    for service in query.services():
        for other_id, other_spans in query.search(service, start, end, limit=SEARCH_LIMIT).items():
            if other_id == trace_id:
                continue
            for link in outgoing_links(other_spans):
                if link.target_trace_id == trace_id:
                    found[(link.source.span_id, link.target_trace_id, link.target_span_id)] = link
    return sorted(found.values(), key=lambda link: link.source.start_ns)


def linked_trace_ids(query: TraceQuery, spans: Sequence[Span]) -> list[tuple[str, TraceLink]]:
    """(other trace id, the link that leads there) for each trace linked to this one, either way."""
    ids: dict[str, TraceLink] = {}
    for link in outgoing_links(spans):
        ids.setdefault(link.target_trace_id, link)
    for link in incoming_links(query, spans):
        ids.setdefault(link.source.trace_id, link)
    return list(ids.items())


def describe(link: TraceLink, spans_by_id: dict[str, Span]) -> str:
    """One line: which span links to which, by service, kind and name where the target is known."""
    source = link.source
    target = spans_by_id.get(link.target_span_id)
    target_text = f"{target.service} {target.kind} {target.name}" if target else f"span {link.target_span_id}"
    return (
        f"{source.service} {source.kind} {source.name} (trace {source.trace_id}) "
        f"links to {target_text} (trace {link.target_trace_id})"
    )
