"""The spans the parity table's store receives (jaeger_parity.py), as data: one export request per batch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------------------------------ the spans sent

TRACE_IDS = {
    "A": "5b8efff798038103d269b633813fc60c",
    "B": "0af7651916cd43dd8448eb211c80319c",
    "C": "4bf92f3577b34da6a3ce929d0e0e4736",
}
MS = 1_000_000


@dataclass(frozen=True)
class SpanData:
    trace: str  # a key of TRACE_IDS
    span_id: str  # 16 hex
    name: str
    kind: int  # OTLP enum: 0 unspecified, 1 internal, 2 server, 3 client
    start_ms: int  # after t0
    end_ms: int
    parent: str = ""
    status: int | None = None  # 0 unset, 1 ok, 2 error; None: no status field sent at all
    attributes: Mapping[str, Any] = field(default_factory=dict)
    event_attributes: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ResourceData:
    attributes: Mapping[str, Any]
    scopes: Sequence[tuple[str, Sequence[SpanData]]]  # (scope name, spans)


GATEWAY = {"service.name": "gateway", "deployment.environment": "parity"}
USERS = {"service.name": "users"}
NO_SERVICE = {"host.name": "box"}  # a resource without service.name

# One export request per entry, sent in this order. Trace A arrives in three batches (batch 4 carries its
# latest-starting span, and a span of unspecified kind next to an INTERNAL one of the same name); B and C
# arrive after A's first batch, each alone, so "most recently received first" is C, B, A while "latest span
# start first" would be A, C, B.
BATCHES: Sequence[Sequence[ResourceData]] = (
    (
        ResourceData(
            GATEWAY,
            [
                (
                    "flask",
                    [
                        SpanData("A", "a000000000000001", "POST /api/users", 2, 0, 50),
                        SpanData(
                            "A",
                            "a000000000000002",
                            "POST",
                            3,
                            5,
                            40,
                            "a000000000000001",
                            attributes={"http.request.method": "POST"},
                        ),
                    ],
                )
            ],
        ),
    ),
    (
        ResourceData(
            USERS,
            [
                (
                    "flask",
                    [
                        SpanData(
                            "A",
                            "a000000000000003",
                            "POST /api/users",
                            2,
                            10,
                            35,
                            "a000000000000002",
                            status=2,
                            attributes={"http.route": "/api/users", "http.response.status_code": 409},
                            event_attributes={"user.email": "ada@example.com"},
                        )
                    ],
                )
            ],
        ),
    ),
    (
        ResourceData(
            GATEWAY,
            [
                (
                    "flask",
                    [
                        SpanData(
                            "B",
                            "b000000000000001",
                            "GET /healthz",
                            2,
                            100,
                            101,
                            status=1,
                            attributes={"http.route": "/healthz"},
                        )
                    ],
                )
            ],
        ),
    ),
    (
        ResourceData(
            NO_SERVICE,
            [("manual", [SpanData("C", "c000000000000001", "orphan", 1, 150, 160, "ffff000000000001")])],
        ),
    ),
    (
        ResourceData(
            GATEWAY,
            [
                ("manual", [SpanData("A", "a000000000000004", "validate", 0, 200, 210, "a000000000000001")]),
                ("flask", [SpanData("A", "a000000000000005", "validate", 1, 20, 25, "a000000000000001")]),
            ],
        ),
    ),
)

# A second store gets 105 one-span traces of service "many" (one batch): the search depth rows count them.
MANY_TRACES = 105


# What Jaeger answers for trace A, from these batches.
A_RESOURCES = [
    ("A", "gateway", ["flask"]),  # batch 1
    ("A", "users", ["flask"]),  # batch 2
    ("A", "gateway", ["manual", "flask"]),  # batch 5: one entry, its two scopes in arrival order
]


def summary_a(t0: int) -> dict[str, Any]:
    return {
        "traceId": TRACE_IDS["A"],
        "rootServiceName": "gateway",
        "rootOperationName": "POST /api/users",
        "minStartTimeUnixNano": str(t0),
        "maxEndTimeUnixNano": str(t0 + 210 * MS),
        "spanCount": 5,
        "errorSpanCount": 1,
        "services": [
            {"name": "gateway", "spanCount": 4},
            {"name": "users", "spanCount": 1, "errorSpanCount": 1},
        ],
    }
