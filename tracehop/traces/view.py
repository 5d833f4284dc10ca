"""`make trace [ID=...]`: find one trace in the query API, wait for its late spans, draw the waterfall."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import requests
from rich.console import Console

from tracehop.traces.query import Span, TraceQuery

# `make trace` without an id: the latest request that creates a user, as the trace store has it.
DEFAULT_SERVICE = "gateway"
DEFAULT_OPERATION = "POST /api/users"
DEFAULT_LOOKBACK = timedelta(days=7)
DEFAULT_CANDIDATES = 20

# Spans keep arriving for a moment after a request (batch processors flush every 500 ms locally, the
# worker finishes its job later): show the trace once its span count has not changed for this long.
SETTLE_SECONDS = 1.5
WAIT_SECONDS = 10.0


class TraceViewError(RuntimeError):
    """The trace cannot be shown; the message tells the user what to do."""


def latest_trace_id(
    query: TraceQuery, now: datetime | None = None, just_sent: tuple[str, float] | None = None
) -> str:
    """The trace of the latest `POST /api/users` the trace store holds, whoever sent it (make traffic,
    curl, a browser) and however it ended.

    `just_sent` is (trace id, unix time) of a create this machine sent itself (`make traffic` saves its
    run): right after it, its spans may still wait in the services' batch queues (up to the export delay)
    and the store only knows older creates. It wins when it is newer than anything the store has.
    """
    now = now or datetime.now(UTC)
    try:
        # Backends list the most recent traces first, but not all promise it: take a few, pick the latest.
        traces = query.search(
            DEFAULT_SERVICE,
            now - DEFAULT_LOOKBACK,
            now + timedelta(minutes=1),  # a little clock skew between the services and this machine
            limit=DEFAULT_CANDIDATES,
            operation=DEFAULT_OPERATION,
        )
    except requests.ConnectionError:
        raise _not_answering(query) from None
    started = {
        trace_id: max(span.start_ns for span in creates)
        for trace_id, spans in traces.items()
        if (creates := [span for span in spans if _is_default_root(span)])
    }
    if just_sent is not None:
        sent_id, sent_at = just_sent
        if not started or sent_at * 1e9 > max(started.values()):
            return sent_id
    if not started:
        raise TraceViewError(
            f"no trace id given, and no {DEFAULT_OPERATION} in the last {DEFAULT_LOOKBACK.days} days in the "
            f"trace store at {query.base_url}: send one (make traffic, or curl), or pass an id: "
            "make trace ID=<trace id>"
        )
    return max(started, key=started.__getitem__)


def _is_default_root(span: Span) -> bool:
    return span.service == DEFAULT_SERVICE and span.name == DEFAULT_OPERATION and span.kind == "SERVER"


def _not_answering(query: TraceQuery) -> TraceViewError:
    return TraceViewError(
        f"the trace query API does not answer at {query.base_url}: is the stack running? (make up)"
    )


def fetch_settled_trace(
    query: TraceQuery, trace_id: str, timeout: float = WAIT_SECONDS, settle: float = SETTLE_SECONDS
) -> list[Span]:
    """The trace's spans once no new span arrived for `settle` seconds (or at the deadline)."""
    try:
        query.get_trace(trace_id)
    except requests.ConnectionError:
        raise _not_answering(query) from None

    last_count = -1
    changed_at = time.monotonic()

    def settled(spans: list[Span]) -> bool:
        nonlocal last_count, changed_at
        if len(spans) != last_count:
            last_count, changed_at = len(spans), time.monotonic()
        return time.monotonic() - changed_at >= settle

    try:
        return query.wait_for_trace(trace_id, until=settled, timeout=timeout)
    except TimeoutError:
        # Still changing at the deadline: show what is there rather than nothing.
        spans = query.get_trace(trace_id)
        if spans:
            return spans
        raise TraceViewError(
            f"trace {trace_id} is not in the trace store at {query.base_url} after {timeout:.0f}s "
            "(is it a trace id of this stack? spans of a stopped stack are kept in var/traces.sqlite3)"
        ) from None


def show_trace(
    trace_id: str, query_url: str, console: Console, timeout: float = WAIT_SECONDS, follow_links: bool = True
) -> list[Span]:
    """The trace's waterfall; then, with `follow_links`, the waterfall of every trace linked to it (a job
    in Celery's link mode starts a trace of its own, linked to the request's PRODUCER span), and of the
    traces linked to those, up to `MAX_FOLLOWED`. Returns the spans of the first trace."""
    from tracehop.traces.links import MAX_FOLLOWED, describe, linked_trace_ids
    from tracehop.traces.waterfall import render_waterfall

    query = TraceQuery(query_url)
    spans = fetch_settled_trace(query, trace_id, timeout=timeout)
    render_waterfall(spans, console)
    console.print(f"In a browser: {trace_page_url(query_url, trace_id)}", no_wrap=True, crop=False)
    if not follow_links:
        return spans
    shown = {trace_id: spans}
    pending = [spans]
    while pending and len(shown) <= MAX_FOLLOWED:
        current = pending.pop(0)
        for other_id, link in linked_trace_ids(query, current):
            if other_id in shown or len(shown) > MAX_FOLLOWED:
                continue
            other = query.get_trace(other_id) or []
            known = {span.span_id: span for trace in (*shown.values(), other) for span in trace}
            console.print()
            console.print(f"[bold]linked:[/] {describe(link, known)}", soft_wrap=True)
            render_waterfall(other, console)
            console.print(f"In a browser: {trace_page_url(query_url, other_id)}", no_wrap=True, crop=False)
            shown[other_id] = other
            pending.append(other)
    return spans


def trace_page_url(query_url: str, trace_id: str) -> str:
    """The trace viewer's page of a trace (the local trace store and Jaeger's UI both serve /trace/<id>)."""
    return f"{query_url.rstrip('/')}/trace/{trace_id}"
