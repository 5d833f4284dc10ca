"""`make trace`: a trace as a waterfall in the terminal, and a table of recent traces.

Each line starts with the tree text form (prefix, service, kind, name: see tree.py), so the first
columns can be pasted into a test as they are; after `  │ ` come the duration and a bar on the trace's time
axis, coloured per service, and `✗` with the status message on error spans.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracehop.traces.query import Span
from tracehop.traces.tree import ERROR_MARK, Node, TreeLine, build_tree, tree_lines

SERVICE_COLOURS = (
    "cyan",
    "magenta",
    "green",
    "yellow",
    "blue",
    "bright_red",
    "bright_cyan",
    "bright_magenta",
)
SEPARATOR = "  │ "
DURATION_WIDTH = 11  # "12345.67 ms"
MIN_BAR_WIDTH = 10
MAX_NOTES_WIDTH = 40
BAR = "█"


def render_waterfall(spans: Sequence[Span], console: Console) -> None:
    """Print a header with the trace id, then one line per span: text form, duration and time bar."""
    if not spans:
        console.print("[yellow]no spans[/]")
        return
    roots = build_tree(spans)
    lines = tree_lines(roots)
    colours = service_colours(line.node.span.service for line in lines)
    trace_start = min(span.start_ns for span in spans)
    trace_end = max(max(span.end_ns, span.start_ns) for span in spans)
    console.print(_header(spans, trace_start, trace_end), no_wrap=True, crop=True)
    text_width = max(len(line.text) for line in lines)
    notes = [_notes(line.node) for line in lines]
    # Leave room for the error notes so the bar does not push them off screen (long ones are cropped).
    notes_width = min(MAX_NOTES_WIDTH, max(len(note) for note in notes))
    fixed_width = text_width + len(SEPARATOR) + DURATION_WIDTH + 1 + notes_width
    axis = _Axis(trace_start, trace_end, max(MIN_BAR_WIDTH, console.width - fixed_width))
    for line, note in zip(lines, notes, strict=True):
        text = _span_line(line, text_width, axis, colours)
        console.print(text.append_text(note), no_wrap=True, crop=True, overflow="crop")


def service_colours(services: Iterable[str]) -> dict[str, str]:
    """A stable colour per service, in order of first appearance."""
    colours: dict[str, str] = {}
    for service in services:
        colours.setdefault(service, SERVICE_COLOURS[len(colours) % len(SERVICE_COLOURS)])
    return colours


def _header(spans: Sequence[Span], start_ns: int, end_ns: int) -> Text:
    services = sorted({span.service for span in spans})
    errors = sum(span.is_error for span in spans)
    header = Text.assemble(
        ("trace ", "bold"),
        (spans[0].trace_id, "bold"),
        f"  ·  {len(spans)} spans  ·  {_ms(end_ns - start_ns)}  ·  {', '.join(services)}",
    )
    if errors:
        header.append(f"  ·  {errors} error{'s' if errors > 1 else ''}", style="bold red")
    return header


class _Axis:
    """Maps nanoseconds since the trace start to character cells of the bar column."""

    def __init__(self, start_ns: int, end_ns: int, width: int) -> None:
        self.start_ns = start_ns
        self.total_ns = max(1, end_ns - start_ns)
        self.width = width

    def bar(self, span: Span) -> tuple[int, int]:
        """(offset, length) in cells; every span gets at least one cell so it stays visible."""
        offset = int((span.start_ns - self.start_ns) * self.width / self.total_ns)
        offset = min(max(offset, 0), self.width - 1)
        length = round(span.duration_ns * self.width / self.total_ns)
        return offset, max(1, min(length, self.width - offset))


def _span_line(line: TreeLine, text_width: int, axis: _Axis, colours: Mapping[str, str]) -> Text:
    """Text-form columns, separator, duration and the bar (notes are appended by the caller)."""
    span = line.node.span
    colour = colours[span.service]
    text = Text(line.text.ljust(text_width))
    # Colour the service column like its bar; the characters stay the text form.
    text.stylize(colour, len(line.prefix), len(line.prefix) + len(span.service))
    text.append(SEPARATOR, style="dim")
    text.append(f"{_ms(span.duration_ns):>{DURATION_WIDTH}} ")
    offset, length = axis.bar(span)
    text.append(" " * offset)
    text.append(BAR * length, style="red" if span.is_error else colour)
    return text


def _notes(node: Node) -> Text:
    notes = Text()
    if node.span.is_error:
        notes.append(f" {ERROR_MARK}", style="bold red")
        if node.span.status_message:
            notes.append(f" {node.span.status_message}", style="red")
    if node.orphan:
        notes.append(f" (orphan: parent {node.span.parent_span_id} is not in the trace)", style="yellow")
    return notes


def _ms(duration_ns: int) -> str:
    return f"{duration_ns / 1e6:.2f} ms"


def render_trace_list(traces: Mapping[str, Sequence[Span]]) -> Table:
    """Table of traces as `TraceQuery.search` returns them: id, root, spans, duration, services, errors."""
    table = Table(title="recent traces", title_justify="left")
    table.add_column("trace id", no_wrap=True)
    table.add_column("root")
    table.add_column("spans", justify="right")
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("services")
    table.add_column("errors", justify="right")
    for trace_id, spans in traces.items():
        if not spans:
            continue
        root = build_tree(spans)[0].span
        start = min(span.start_ns for span in spans)
        end = max(span.end_ns for span in spans)
        errors = sum(span.is_error for span in spans)
        table.add_row(
            trace_id,
            f"{root.service} {root.kind} {root.name}",
            str(len(spans)),
            _ms(max(0, end - start)),
            ", ".join(sorted({span.service for span in spans})),
            Text(str(errors), style="bold red") if errors else Text("0", style="dim"),
        )
    return table
