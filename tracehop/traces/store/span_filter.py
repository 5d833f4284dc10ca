"""The span conditions of a trace search as SQL, with the meaning Jaeger 2.20's memory store gives them.

A trace matches when ONE of its spans meets every condition (internal/storage/v2/memory/tenant.go validTrace,
validResource, validSpan):
- service: the span's resource has that service.name; operation: the span's name;
- the span starts within [min, max] (both ends included); its duration is within the bounds (a 0 bound is
  no bound);
- each `query.attributes` pair:
  - `error`: `true` wants status ERROR, `false` status OK; a value that is not a boolean matches nothing;
  - `span.status` (OK, ERROR, anything else UNSET) and `span.kind` (SERVER, CLIENT, PRODUCER, CONSUMER,
    INTERNAL, anything else UNSPECIFIED), any case;
  - `scope.name`, `scope.version`: the span's instrumentation scope;
  - `resource.<key>`: that key among the resource's attributes only;
  - any other key: among the attributes of the span, its scope, its resource, one of its events or links.
  Values compare as text (attribute_text.as_string).

The attribute index (indexing.py) holds the span's, its events' and its links' attribute values by span row
and the resource's by resource; scopes are few and are matched in Python (`ScopeInfo`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from tracehop.traces.store.query_params import parse_go_bool

# memory/tenant.go spanStatusFromString / spanKindFromString, over the OTLP enum values.
STATUS_CODES = {"OK": 1, "ERROR": 2}
SPAN_KINDS = {"INTERNAL": 1, "SERVER": 2, "CLIENT": 3, "PRODUCER": 4, "CONSUMER": 5}
SCOPE_KEYS = {"scope.name": "name", "scope.version": "version"}


class SpanConditions(Protocol):
    """What a search asks of one span (database.TraceSearch has these fields)."""

    start_min_ns: int
    start_max_ns: int
    service: str
    operation: str | None
    duration_min_ns: int | None
    duration_max_ns: int | None
    attributes: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ScopeInfo:
    name: str
    version: str
    attributes: Mapping[str, str] = field(default_factory=dict)  # key -> as_string(value)


def span_conditions(
    search: SpanConditions, scopes: Mapping[int, ScopeInfo], alias: str = "s", by_trace: bool = False
) -> tuple[str, list[Any]]:
    """(" AND ..." over the spans table aliased `alias`, its arguments).

    `by_trace`: the conditions test the spans of one trace (a correlated subquery on trace_id); the unary
    `+` then keeps SQLite from driving the lookup by another index than the trace's.
    """
    s = f"+{alias}" if by_trace else alias
    sql = f" AND {s}.start_ns BETWEEN ? AND ?"
    args: list[Any] = [search.start_min_ns, search.start_max_ns]
    if search.service:
        sql += f" AND {s}.service = ?"
        args.append(search.service)
    if search.operation:
        sql += f" AND {s}.name = ?"
        args.append(search.operation)
    if search.duration_min_ns is not None:
        sql += f" AND {s}.end_ns - {s}.start_ns >= ?"
        args.append(search.duration_min_ns)
    if search.duration_max_ns is not None:
        sql += f" AND {s}.end_ns - {s}.start_ns <= ?"
        args.append(search.duration_max_ns)
    for key, value in search.attributes:
        condition, condition_args = _attribute_condition(key, value, scopes, s)
        sql += f" AND {condition}"
        args += condition_args
    return sql, args


def _attribute_condition(
    key: str, value: str, scopes: Mapping[int, ScopeInfo], s: str
) -> tuple[str, list[Any]]:
    if key == "error":
        try:
            wanted = 2 if parse_go_bool(value) else 1
        except ValueError:
            return "0", []  # errorQueryValue: not a boolean -> no span matches
        return f"{s}.status_code = ?", [wanted]
    if key == "span.status":
        return f"{s}.status_code = ?", [STATUS_CODES.get(value.upper(), 0)]
    if key == "span.kind":
        return f"{s}.kind = ?", [SPAN_KINDS.get(value.upper(), 0)]
    if key in SCOPE_KEYS:
        ids = [scope_id for scope_id, scope in scopes.items() if getattr(scope, SCOPE_KEYS[key]) == value]
        return _in(f"{s}.scope_id", ids)
    resource = f"{s}.resource_id IN (SELECT resource_id FROM resource_attributes WHERE key = ? AND value = ?)"
    if key.startswith("resource."):
        return resource, [key.removeprefix("resource."), value]
    scope_sql, scope_args = _in(
        f"{s}.scope_id",
        [scope_id for scope_id, scope in scopes.items() if scope.attributes.get(key) == value],
    )
    return (
        f"({s}.rowid IN (SELECT span_rowid FROM span_attributes WHERE key = ? AND value = ?)"
        f" OR {resource} OR {scope_sql})",
        [key, value, key, value, *scope_args],
    )


def _in(column: str, ids: list[int]) -> tuple[str, list[Any]]:
    if not ids:
        return "0", []
    return f"{column} IN ({','.join('?' * len(ids))})", list(ids)
