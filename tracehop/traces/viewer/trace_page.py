"""What the trace page shows: the header, one waterfall row per span, span details, log lines.

The rows are `trace_tree.tree_lines` of `build_tree(spans)`: the very lines `make trace` prints, in the
same order with the same prefixes, so the page and the terminal show the same tree row for row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tracehop.traces.logs import LogLine
from tracehop.traces.query import Span
from tracehop.traces.tree import build_tree, tree_lines
from tracehop.traces.viewer import formatting

BAR_SCALE = 1000  # the waterfall's SVG viewBox width: bar offsets and widths in thousandths of the trace
SERVICE_PALETTE_SIZE = 8  # classes svc-0 .. svc-7 in viewer.css
TICKS = 5  # time-axis labels: 0, 1/4, 1/2, 3/4 and the whole duration


@dataclass(frozen=True)
class Field:
    key: str
    value: str


@dataclass(frozen=True)
class Event:
    name: str
    offset: str  # from the trace start
    fields: list[Field]


@dataclass(frozen=True)
class SpanLink:
    trace_id: str
    span_id: str
    href: str
    label: str  # "service KIND name" when the linked span is in this trace


@dataclass
class Row:
    span: Span
    depth: int
    prefix: str  # the tree text form's box-drawing prefix
    text: str  # prefix + service + kind + name exactly as `make trace` prints it
    colour: int
    bar_x: float
    bar_width: float
    offset: str
    duration: str
    child_count: int
    orphan: bool
    attributes: list[Field] = field(default_factory=list)
    resource: list[Field] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    links: list[SpanLink] = field(default_factory=list)
    log_count: int = 0

    @property
    def bar_percent(self) -> tuple[str, str]:
        """(x, width) of the bar as SVG percentages."""
        return f"{self.bar_x / 10:.2f}%", f"{self.bar_width / 10:.2f}%"

    @property
    def label_position(self) -> tuple[str, str, str]:
        """(x, text-anchor, class) of the duration label: after the bar, else before it, else inside it."""
        end = self.bar_x + self.bar_width
        if end < BAR_SCALE * 0.85:
            return f"{end / 10 + 0.4:.2f}%", "start", "bar-label"
        if self.bar_x > BAR_SCALE * 0.15:
            return f"{self.bar_x / 10 - 0.4:.2f}%", "end", "bar-label"
        return f"{self.bar_x / 10 + 0.4:.2f}%", "start", "bar-label inside"


@dataclass(frozen=True)
class LogRow:
    span_id: str
    service: str
    colour: int | None
    level: str
    message: str
    time: str
    offset: str
    fields: list[Field]


@dataclass(frozen=True)
class ServiceCount:
    service: str
    colour: int
    spans: int


@dataclass
class TracePage:
    trace_id: str
    start: str
    duration: str
    depth: int
    errors: int
    services: list[ServiceCount]
    rows: list[Row]
    ticks: list[str]
    logs: list[LogRow]
    start_ns: int

    @property
    def span_count(self) -> int:
        return len(self.rows)


def service_colours(services: Iterable[str]) -> dict[str, int]:
    """A palette index per service in order of first appearance."""
    colours: dict[str, int] = {}
    for service in services:
        colours.setdefault(service, len(colours) % SERVICE_PALETTE_SIZE)
    return colours


def build_trace_page(
    spans: Sequence[Span], log_lines: Sequence[LogLine] = (), known_services: Sequence[str] = ()
) -> TracePage:
    """`known_services`: every service of the store, so that a service has the same colour on every page."""
    roots = build_tree(spans)
    lines = tree_lines(roots)
    colours = service_colours([*known_services, *(line.node.span.service for line in lines)])
    start_ns = min(span.start_ns for span in spans)
    end_ns = max(max(span.end_ns, span.start_ns) for span in spans)
    total_ns = max(1, end_ns - start_ns)
    labels = {span.span_id: f"{span.service} {span.kind} {span.name}" for span in spans}
    logs = [_log_row(line, colours, start_ns) for line in log_lines]
    logs_per_span: dict[str, int] = {}
    for log in logs:
        logs_per_span[log.span_id] = logs_per_span.get(log.span_id, 0) + 1
    rows = []
    for line in lines:
        span = line.node.span
        x = (span.start_ns - start_ns) * BAR_SCALE / total_ns
        rows.append(
            Row(
                span=span,
                depth=line.depth,
                prefix=line.prefix,
                text=line.text,
                colour=colours[span.service],
                bar_x=round(min(max(x, 0.0), BAR_SCALE), 3),
                # At least a sliver, so that a 20 μs span in a 2 s trace is still seen.
                bar_width=round(max(span.duration_ns * BAR_SCALE / total_ns, 1.0), 3),
                offset=formatting.duration(max(0, span.start_ns - start_ns)),
                duration=formatting.duration(span.duration_ns),
                child_count=len(line.node.children),
                orphan=line.node.orphan,
                attributes=_fields(span.attributes),
                resource=_fields(span.resource),
                events=[
                    Event(name, formatting.duration(max(0, time_ns - start_ns)), _fields(attributes))
                    for name, attributes, time_ns in sorted(span.events, key=lambda event: event[2])
                ],
                links=[_link(trace_id, span_id, span.trace_id, labels) for trace_id, span_id in span.links],
                log_count=logs_per_span.get(span.span_id, 0),
            )
        )
    counts: dict[str, int] = {}
    for span in spans:
        counts[span.service] = counts.get(span.service, 0) + 1
    return TracePage(
        trace_id=spans[0].trace_id,
        start=formatting.clock(start_ns),
        duration=formatting.duration(end_ns - start_ns),
        depth=1 + max((depth for root in roots for depth, _ in root.walk()), default=0),
        errors=sum(span.is_error for span in spans),
        services=[ServiceCount(service, colours[service], counts[service]) for service in sorted(counts)],
        rows=rows,
        ticks=[formatting.duration(total_ns * index // (TICKS - 1)) for index in range(TICKS)],
        logs=logs,
        start_ns=start_ns,
    )


def _fields(attributes: dict[str, Any]) -> list[Field]:
    return [Field(key, formatting.value(attributes[key])) for key in sorted(attributes)]


def _link(trace_id: str, span_id: str, this_trace: str, labels: dict[str, str]) -> SpanLink:
    href = f"/trace/{trace_id}?span={span_id}"
    label = labels.get(span_id, "") if trace_id == this_trace else ""
    return SpanLink(trace_id, span_id, href, label or f"span {span_id} of trace {trace_id}")


def _log_row(line: LogLine, colours: dict[str, int], start_ns: int) -> LogRow:
    time_ns = int(line.timestamp.timestamp() * 1e9) if line.timestamp.year > 1 else start_ns
    service = str(line.fields.get("service", line.source.stem))
    return LogRow(
        span_id=str(line.fields.get("span_id", "")).lower(),
        service=service,
        colour=colours.get(service),
        level=str(line.fields.get("level", "")),
        message=str(line.fields.get("message", "")),
        time=formatting.time_of_day(time_ns),
        offset=("+" if time_ns >= start_ns else "−") + formatting.duration(abs(time_ns - start_ns)),
        fields=_fields(line.extra_fields),
    )
