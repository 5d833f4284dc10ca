"""How long the trace store keeps spans: `TRACEHOP_TRACE_RETENTION`, by age and by span count.

A store left running for days (a laptop's `make up`, a long `make bench`) must not grow without bound.
Whole traces go, oldest first, so a trace is never shown half pruned:

- by age: traces whose newest span started more than `max_age` ago;
- by count: when more than `max_spans` spans are stored, the oldest traces until about 90% of it remains
  (the margin keeps the store from pruning a little after every export).

Pruning never holds up the store (database.py): its limits are read on a read connection, and traces go
in chunks of PRUNE_CHUNK_TRACES, each its own short write transaction, so an export waits for one chunk at
most and queries not at all; the first prune runs FIRST_PRUNE_DELAY_S after the store starts.

Setting: `TRACEHOP_TRACE_RETENTION="max_age=7d,max_spans=500000"`; either part may be left out (it keeps
its default), and `0` turns that limit off. Durations are Go-style (`90m`, `36h`) or days (`7d`).
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace

from tracehop.traces.store import indexing

ENV_VARIABLE = "TRACEHOP_TRACE_RETENTION"
DEFAULT_MAX_AGE_NS = 7 * 24 * 3600 * 10**9
DEFAULT_MAX_SPANS = 500_000
KEEP_FRACTION = 0.9  # pruning by count leaves this much of max_spans
PRUNE_INTERVAL_S = 60.0
# The first prune waits this long after the store starts: the first seconds belong to answering queries
# and taking in the backlog the services queued while the store was down.
FIRST_PRUNE_DELAY_S = 2.0
# Traces deleted per write transaction: ingest waits for one chunk at most, never for a whole prune.
PRUNE_CHUNK_TRACES = 200

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?)(ns|us|ms|s|m|h|d)")
_UNITS_NS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_UNITS_NS["d"] = 24 * _UNITS_NS["h"]


class RetentionError(ValueError):
    """The retention setting cannot be understood; the message says how to write it."""


@dataclass(frozen=True)
class Retention:
    max_age_ns: int = DEFAULT_MAX_AGE_NS  # 0: no limit by age
    max_spans: int = DEFAULT_MAX_SPANS  # 0: no limit by count


def parse_retention(text: str) -> Retention:
    """`max_age=7d,max_spans=500000` (either part optional) -> Retention."""
    retention = Retention()
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key == "max_age":
            retention = replace(retention, max_age_ns=_duration_ns(value))
        elif key == "max_spans" and value.isdigit():
            retention = replace(retention, max_spans=int(value))
        else:
            raise RetentionError(
                f"{ENV_VARIABLE}: cannot read {item!r}; write e.g. max_age=7d,max_spans=500000 (0: no limit)"
            )
    return retention


def _duration_ns(text: str) -> int:
    if text == "0":
        return 0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise RetentionError(f"{ENV_VARIABLE}: max_age {text!r} is not a duration like 36h or 7d")
    return round(sum(float(number) * _UNITS_NS[unit] for number, unit in parts))


def retention_from_env(environ: Mapping[str, str] | None = None) -> Retention:
    environ = os.environ if environ is None else environ
    return parse_retention(environ.get(ENV_VARIABLE, ""))


def age_cutoff(retention: Retention, now_ns: int) -> int | None:
    """Traces whose newest span started before this go by age (None: no age limit)."""
    return now_ns - retention.max_age_ns if retention.max_age_ns else None


def count_cutoff(connection: sqlite3.Connection, retention: Retention) -> int | None:
    """Traces whose newest span started before this go by count (None: within the limit)."""
    if not retention.max_spans:
        return None
    (total,) = connection.execute("SELECT COUNT(*) FROM spans").fetchone()
    if total <= retention.max_spans:
        return None
    keep = max(1, int(retention.max_spans * KEEP_FRACTION))
    (cutoff,) = connection.execute(
        "SELECT start_ns FROM spans ORDER BY start_ns DESC LIMIT 1 OFFSET ?", (keep - 1,)
    ).fetchone()
    return cutoff


def delete_oldest_traces(connection: sqlite3.Connection, cutoff_ns: int, limit: int) -> tuple[int, int]:
    """Delete up to `limit` of the traces whose every span started before `cutoff_ns`, oldest first (the
    caller holds the write transaction); return (traces, spans) deleted.

    A trace's newest start is kept in `traces` (database.py), so the traces to go are found through its
    index, and their spans' attribute rows by their key (recomputed from the spans, indexing.py): the work
    is proportional to what goes, not to what the store holds.
    """
    trace_ids = [
        trace_id
        for (trace_id,) in connection.execute(
            "SELECT trace_id FROM traces WHERE max_start_ns < ? ORDER BY max_start_ns LIMIT ?",
            (cutoff_ns, limit),
        )
    ]
    if not trace_ids:
        return 0, 0
    marks = ",".join("?" * len(trace_ids))
    spans = connection.execute(f"SELECT rowid, body FROM spans WHERE trace_id IN ({marks})", trace_ids)
    connection.executemany(
        indexing.DELETE_SPAN_ATTRIBUTE,
        [row for rowid, body in spans for row in indexing.span_rows(rowid, body)],
    )
    deleted = connection.execute(f"DELETE FROM spans WHERE trace_id IN ({marks})", trace_ids).rowcount
    connection.execute(f"DELETE FROM traces WHERE trace_id IN ({marks})", trace_ids)
    return len(trace_ids), deleted
