"""The service map: which service calls which, drawn from the stored spans.

An edge is a parent -> child pair of spans of two different services (an HTTP CLIENT -> SERVER call, a
PRODUCER -> CONSUMER message); its count is the number of such child spans and its error count the number
of them with status ERROR. This is what Jaeger's dependencies view counts, plus errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServiceNode:
    service: str
    spans: int
    errors: int


@dataclass(frozen=True)
class ServiceEdge:
    parent: str
    child: str
    calls: int
    errors: int


@dataclass(frozen=True)
class ServiceMap:
    nodes: list[ServiceNode]
    edges: list[ServiceEdge]

    def to_json(self) -> dict[str, Any]:
        return {
            "nodes": [{"service": n.service, "spans": n.spans, "errors": n.errors} for n in self.nodes],
            "edges": [
                {"parent": e.parent, "child": e.child, "callCount": e.calls, "errorCount": e.errors}
                for e in self.edges
            ],
        }


def build_service_map(
    connection: sqlite3.Connection,
    start_min_ns: int,
    start_max_ns: int,
    trace_ids: Sequence[str] | None = None,
) -> ServiceMap:
    """Nodes and edges of the spans starting in [start_min_ns, start_max_ns] (of `trace_ids` if given)."""
    where = "c.start_ns BETWEEN ? AND ?"
    args: list[Any] = [start_min_ns, start_max_ns]
    if trace_ids is not None:
        # A temporary table, not `IN (?, ...)`: a search may match more traces than SQLite's variable limit.
        connection.execute("CREATE TEMP TABLE IF NOT EXISTS map_traces (trace_id TEXT PRIMARY KEY)")
        connection.execute("DELETE FROM map_traces")
        connection.executemany("INSERT OR IGNORE INTO map_traces VALUES (?)", [(t,) for t in trace_ids])
        where += " AND c.trace_id IN (SELECT trace_id FROM map_traces)"
    nodes = [
        ServiceNode(*row)
        for row in connection.execute(
            f"SELECT c.service, COUNT(*), SUM(c.status_code = 2) FROM spans AS c WHERE {where}"
            " GROUP BY c.service ORDER BY c.service",
            args,
        )
    ]
    edges = [
        ServiceEdge(*row)
        for row in connection.execute(
            "SELECT p.service, c.service, COUNT(*), SUM(c.status_code = 2) FROM spans AS c"
            " JOIN spans AS p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id"
            f" WHERE {where} AND p.service != c.service"
            " GROUP BY p.service, c.service ORDER BY p.service, c.service",
            args,
        )
    ]
    return ServiceMap(nodes, edges)
