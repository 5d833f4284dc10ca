"""One line per trace in the search results: root, services with span counts, spans, duration, errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tracehop.traces.query import Span
from tracehop.traces.tree import build_tree
from tracehop.traces.viewer import formatting
from tracehop.traces.viewer.trace_page import ServiceCount, service_colours


@dataclass(frozen=True)
class TraceSummary:
    trace_id: str
    root_service: str
    root_kind: str
    root_name: str
    root_colour: int
    services: list[ServiceCount]
    spans: int
    errors: int
    start_ns: int
    duration_ns: int

    @property
    def start(self) -> str:
        return formatting.clock(self.start_ns)

    @property
    def duration(self) -> str:
        return formatting.duration(self.duration_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "traceId": self.trace_id,
            "root": {"service": self.root_service, "kind": self.root_kind, "name": self.root_name},
            "services": {count.service: count.spans for count in self.services},
            "spans": self.spans,
            "errors": self.errors,
            "startTimeUnixNano": str(self.start_ns),
            "durationNano": str(self.duration_ns),
        }


def summarise(spans: Sequence[Span], colours: dict[str, int]) -> TraceSummary:
    """`colours`: service -> palette index, shared by every page (and grown here for a new service)."""
    root = build_tree(spans)[0].span
    counts: dict[str, int] = {}
    for span in spans:
        counts[span.service] = counts.get(span.service, 0) + 1
    for service in sorted(counts):
        colours.update(service_colours([*colours, service]))
    start = min(span.start_ns for span in spans)
    end = max(max(span.end_ns, span.start_ns) for span in spans)
    return TraceSummary(
        trace_id=root.trace_id,
        root_service=root.service,
        root_kind=root.kind,
        root_name=root.name,
        root_colour=colours[root.service],
        services=[ServiceCount(service, colours[service], counts[service]) for service in sorted(counts)],
        spans=len(spans),
        errors=sum(span.is_error for span in spans),
        start_ns=start,
        duration_ns=end - start,
    )


def newest_first(summaries: list[TraceSummary]) -> list[TraceSummary]:
    return sorted(summaries, key=lambda summary: summary.start_ns, reverse=True)
