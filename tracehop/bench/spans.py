"""Spans in the local trace store: how many arrived, how many went missing, how soon a trace is whole.

The counting reads the trace store's SQLite file directly (read-only; the store runs in WAL mode, so
reading never blocks its writes): asking for thousands of traces through the query API would load the
very machine being measured. The freshness check confirms each trace through the query API as well, since
"queryable" is what it promises.

The services expose no "spans dropped" metric, so `spans_dropped` is computed: for every request that
was answered, the spans its kind of trace has (learnt from an untimed warm-up request, never hard-coded),
minus the spans stored. See `account_spans`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tracehop.bench.stats import percentile, round_or_none
from tracehop.traces.query import Span, TraceQuery


@dataclass(frozen=True)
class TraceRoot:
    trace_id: str
    name: str  # the root span's name, e.g. "POST /api/users"
    spans: int  # spans stored for this trace so far


class TraceStoreReader:
    def __init__(self, db_path: Path) -> None:
        self._path = db_path
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()  # the freshness poller and the main thread share the connection

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            uri = f"file:{self._path}?mode=ro"
            self._connection = sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
        return self._connection

    def high_water(self) -> int:
        """A number that grows with every span stored (the newest rowid)."""
        with self._lock:
            row = self._db().execute("SELECT max(rowid) FROM spans").fetchone()
        return int(row[0] or 0)

    def roots_between(
        self, start_ns: int, end_ns: int, service: str, names: Iterable[str]
    ) -> list[TraceRoot]:
        """Traces whose root span (of `service`, named one of `names`) started in [start_ns, end_ns]."""
        names = sorted(set(names))
        if not names:
            return []
        marks = ",".join("?" * len(names))
        query = (
            "SELECT r.trace_id, r.name, (SELECT count(*) FROM spans s WHERE s.trace_id = r.trace_id) "
            "FROM spans r WHERE r.service = ? AND r.start_ns BETWEEN ? AND ? "
            f"AND r.parent_span_id = '' AND r.name IN ({marks})"
        )
        with self._lock:
            rows = self._db().execute(query, (service, start_ns, end_ns, *names)).fetchall()
        return [TraceRoot(trace_id, name, count) for trace_id, name, count in rows]

    def span_counts(self, trace_ids: Iterable[str]) -> dict[str, int]:
        ids = list(trace_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        query = f"SELECT trace_id, count(*) FROM spans WHERE trace_id IN ({marks}) GROUP BY trace_id"
        with self._lock:
            return dict(self._db().execute(query, ids).fetchall())

    def wait_until_settled(self, quiet_s: float = 1.5, timeout_s: float = 30.0) -> bool:
        """Wait until no span has arrived for `quiet_s` (batch processors flush every 0.5 s here)."""
        deadline = time.monotonic() + timeout_s
        last, last_change = self.high_water(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.25)
            current = self.high_water()
            if current != last:
                last, last_change = current, time.monotonic()
            elif time.monotonic() - last_change >= quiet_s:
                return True
        return False

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None


# ------------------------------------------------------------------------------------------ the shapes


@dataclass(frozen=True)
class TraceShape:
    """What one complete trace of a request kind looks like, learnt from a warm-up request."""

    root_service: str
    root_name: str
    spans: int
    job_spans: int  # spans written by the worker (they never exist for a job that never ran)


def shape_of(spans: list[Span], worker_service: str = "worker") -> TraceShape:
    roots = [span for span in spans if not span.parent_span_id]
    if len(roots) != 1:
        raise ValueError(f"a warm-up trace should have one root span, found {len(roots)}")
    return TraceShape(
        root_service=roots[0].service,
        root_name=roots[0].name,
        spans=len(spans),
        job_spans=sum(1 for span in spans if span.service == worker_service),
    )


def learn_shape(
    query: TraceQuery, trace_id: str, settle_s: float = 2.0, timeout_s: float = 30.0
) -> TraceShape:
    """Poll a warm-up trace until its span count has not changed for `settle_s`, then describe it."""
    deadline = time.monotonic() + timeout_s
    last_count, last_change = -1, time.monotonic()
    spans: list[Span] = []
    while time.monotonic() < deadline:
        spans = query.get_trace(trace_id) or []
        if len(spans) != last_count:
            last_count, last_change = len(spans), time.monotonic()
        elif spans and time.monotonic() - last_change >= settle_s:
            return shape_of(spans)
        time.sleep(0.2)
    raise TimeoutError(f"warm-up trace {trace_id} did not settle within {timeout_s:g} s ({last_count} spans)")


# ------------------------------------------------------------------------------------ span accounting


@dataclass(frozen=True)
class SpanAccount:
    traces: int  # traces found whose root started in the window
    exported: int  # spans stored for those traces
    expected: int
    dropped: int
    incomplete_traces: int
    missing_roots: int  # answered requests with no root span stored at all

    def as_dict(self) -> dict[str, int]:
        return {
            "traces": self.traces,
            "spans_exported": self.exported,
            "spans_expected": self.expected,
            "spans_dropped": self.dropped,
            "incomplete_traces": self.incomplete_traces,
            "missing_roots": self.missing_roots,
        }


def account_spans(
    roots: list[TraceRoot],
    answered: Mapping[str, int],
    shapes: Mapping[str, TraceShape],
    purged_jobs: int = 0,
    every_request_sampled: bool = True,
) -> SpanAccount:
    """Compare the spans stored with the spans the answered requests should have produced.

    `answered`: {root name: successful answers}; `shapes`: {root name: shape}. A stored trace with fewer
    spans than its shape lost some; an answered request without any stored root lost its whole trace.
    More roots than answers is normal (requests in flight when the load generator stopped still ran).
    Jobs purged from a queue that did not drain never ran, so their worker spans are not "dropped".
    With a ratio sampler (`every_request_sampled` False) a request without a stored root was not sampled:
    only the stored traces are checked for completeness.
    """
    stored = Counter(root.name for root in roots)
    expected_of_stored = sum(shapes[root.name].spans for root in roots if root.name in shapes)
    missing_in_stored = sum(
        max(0, shapes[root.name].spans - root.spans) for root in roots if root.name in shapes
    )
    missing_roots = {name: max(0, answered.get(name, 0) - stored.get(name, 0)) for name in shapes}
    missing_root_spans = sum(count * shapes[name].spans for name, count in missing_roots.items())
    if not every_request_sampled:
        missing_root_spans = 0
    never_ran = sum(purged_jobs * shape.job_spans for shape in shapes.values() if shape.job_spans)
    return SpanAccount(
        traces=len(roots),
        exported=sum(root.spans for root in roots),
        expected=expected_of_stored + missing_root_spans,
        dropped=max(0, missing_in_stored + missing_root_spans - never_ran),
        incomplete_traces=sum(
            1 for root in roots if root.name in shapes and root.spans < shapes[root.name].spans
        ),
        missing_roots=sum(missing_roots.values()),
    )


# ------------------------------------------------------------------------------------------ freshness


@dataclass
class FreshnessResult:
    delays_s: list[float] = field(default_factory=list)
    incomplete: int = 0  # sampled traces still not complete at the deadline

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "samples": len(self.delays_s) + self.incomplete,
            "complete": len(self.delays_s),
            "incomplete": self.incomplete,
            "p50_s": round_or_none(percentile(self.delays_s, 50)),
            "p95_s": round_or_none(percentile(self.delays_s, 95)),
            "max_s": round_or_none(max(self.delays_s) if self.delays_s else None),
        }

    def merge(self, other: FreshnessResult) -> FreshnessResult:
        return FreshnessResult(self.delays_s + other.delays_s, self.incomplete + other.incomplete)


class FreshnessTracker:
    """Time from a response to its complete trace being queryable, for sampled responses.

    A poller thread checks all pending traces with one SQLite query every `poll_s`; a trace that has all
    its spans there is confirmed through the query API (one GET), and its delay recorded then. So the
    resolution is about `poll_s`, and the poller costs the machine almost nothing.
    """

    def __init__(
        self, reader: TraceStoreReader, query: TraceQuery, expected_spans: int, poll_s: float = 0.1
    ) -> None:
        self._reader, self._query, self._expected, self._poll_s = reader, query, expected_spans, poll_s
        self._lock = threading.Lock()
        self._pending: dict[str, float] = {}  # trace id -> time.time() of the response
        self._result = FreshnessResult()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-freshness", daemon=True)

    def start(self) -> FreshnessTracker:
        self._thread.start()
        return self

    def add(self, trace_id: str, responded_at: float) -> None:
        """Called from the load generator's threads."""
        with self._lock:
            self._pending[trace_id] = responded_at

    @property
    def completed(self) -> int:
        with self._lock:
            return len(self._result.delays_s)

    def finish(self, timeout_s: float = 15.0) -> FreshnessResult:
        """Wait for the pending traces (at most `timeout_s`), then stop; the rest count as incomplete."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(self._poll_s)
        self._stopping.set()
        self._thread.join(timeout=10)
        with self._lock:
            self._result.incomplete += len(self._pending)
            self._pending.clear()
        return self._result

    def _run(self) -> None:
        while not self._stopping.wait(self._poll_s):
            with self._lock:
                pending = list(self._pending)
            if not pending:
                continue
            counts = self._reader.span_counts(pending)
            for trace_id in pending:
                if counts.get(trace_id, 0) >= self._expected and self._confirm(trace_id):
                    now = time.time()
                    with self._lock:
                        responded_at = self._pending.pop(trace_id)
                        self._result.delays_s.append(now - responded_at)

    def _confirm(self, trace_id: str) -> bool:
        try:
            spans = self._query.get_trace(trace_id) or []
        except Exception:  # a transient query error only delays the measurement of this trace
            return False
        return len(spans) >= self._expected
