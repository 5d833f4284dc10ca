"""How long the trace store keeps spans: `TRACEHOP_TRACE_RETENTION`, by age and by span count.

A store left running for days (a laptop's `make up`, a long `make bench`) must not grow without bound.
Whole traces go, oldest first, so a trace is never shown half pruned:

- by age: traces whose newest span started more than `max_age` ago;
- by count: when more than `max_spans` spans are stored, the oldest traces until about 90% of it remains
  (the margin keeps the store from pruning a little after every export).

Setting: `TRACEHOP_TRACE_RETENTION="max_age=7d,max_spans=500000"`; either part may be left out (it keeps
its default), and `0` turns that limit off. Durations are Go-style (`90m`, `36h`) or days (`7d`).
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, replace

ENV_VARIABLE = "TRACEHOP_TRACE_RETENTION"
DEFAULT_MAX_AGE_NS = 7 * 24 * 3600 * 10**9
DEFAULT_MAX_SPANS = 500_000
KEEP_FRACTION = 0.9  # pruning by count leaves this much of max_spans
PRUNE_INTERVAL_S = 60.0

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


def prune(connection: sqlite3.Connection, retention: Retention, now_ns: int) -> int:
    """Delete the traces beyond `retention` (caller holds the transaction); return how many spans went."""
    deleted = 0
    if retention.max_age_ns:
        deleted += _delete_traces_before(connection, now_ns - retention.max_age_ns)
    if retention.max_spans:
        (total,) = connection.execute("SELECT COUNT(*) FROM spans").fetchone()
        if total > retention.max_spans:
            keep = max(1, int(retention.max_spans * KEEP_FRACTION))
            (cutoff,) = connection.execute(
                "SELECT start_ns FROM spans ORDER BY start_ns DESC LIMIT 1 OFFSET ?", (keep - 1,)
            ).fetchone()
            deleted += _delete_traces_before(connection, cutoff)
    if deleted:
        # The attribute index has no key by span: one pass removes the rows of every deleted span.
        connection.execute("DELETE FROM span_attributes WHERE span_rowid NOT IN (SELECT rowid FROM spans)")
        connection.execute("DELETE FROM traces WHERE trace_id NOT IN (SELECT trace_id FROM spans)")
    return deleted


def _delete_traces_before(connection: sqlite3.Connection, cutoff_ns: int) -> int:
    """Delete the traces whose every span started before `cutoff_ns`."""
    cursor = connection.execute(
        "DELETE FROM spans WHERE trace_id IN ("
        " SELECT trace_id FROM spans WHERE start_ns < ?"
        " EXCEPT SELECT trace_id FROM spans WHERE start_ns >= ?)",
        (cutoff_ns, cutoff_ns),
    )
    return cursor.rowcount
