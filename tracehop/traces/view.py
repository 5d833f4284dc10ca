"""`make trace [ID=...]`: fetch one trace from the query API, wait for its late spans, draw the waterfall."""

from __future__ import annotations

import re
import time

import requests
from rich.console import Console

from tracehop.traces.query import Span, TraceQuery

TRACE_ID = re.compile(r"[0-9a-f]{32}")

# Spans keep arriving for a moment after a request (batch processors flush every 500 ms locally, the
# worker finishes its job later): show the trace once its span count has not changed for this long.
SETTLE_SECONDS = 1.5
WAIT_SECONDS = 10.0


class TraceViewError(RuntimeError):
    """The trace cannot be shown; the message tells the user what to do."""


def normalize_trace_id(raw: str) -> str:
    """A trace id as the query API wants it: 32 lowercase hex digits."""
    trace_id = raw.strip().lower()
    if not TRACE_ID.fullmatch(trace_id):
        raise TraceViewError(f"{raw!r} is not a trace id (32 hex digits, as `make traffic` prints)")
    return trace_id


def fetch_settled_trace(
    query: TraceQuery, trace_id: str, timeout: float = WAIT_SECONDS, settle: float = SETTLE_SECONDS
) -> list[Span]:
    """The trace's spans once no new span arrived for `settle` seconds (or at the deadline)."""
    try:
        query.get_trace(trace_id)
    except requests.ConnectionError:
        raise TraceViewError(
            f"the trace query API does not answer at {query.base_url}: is the stack running? (make up)"
        ) from None

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


def show_trace(trace_id: str, query_url: str, console: Console, timeout: float = WAIT_SECONDS) -> list[Span]:
    from tracehop.traces.waterfall import render_waterfall

    spans = fetch_settled_trace(TraceQuery(query_url), trace_id, timeout=timeout)
    render_waterfall(spans, console)
    return spans
