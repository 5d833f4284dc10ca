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
PIPE_BAR_WIDTH = 40  # not a terminal: no width to fill, a fixed axis
HEADER_GAP = "  ·  "
BAR = "█"


def render_waterfall(spans: Sequence[Span], console: Console) -> None:
    """Print a header with the trace id, then one line per span: text form, duration and time bar.

    On a terminal every line fits its width: the bar takes what the text form and duration leave, and an
    error or orphan note that would not fit after it is listed in full under the waterfall instead (the
    span's line keeps its ✗), so no message is cut and the span lines stay pasteable text form. Anywhere
    else (a pipe, a file) each span is one whole line, its note included.
    """
    if not spans:
        console.print("[yellow]no spans[/]")
        return
    roots = build_tree(spans)
    lines = tree_lines(roots)
    colours = service_colours(line.node.span.service for line in lines)
    trace_start = min(span.start_ns for span in spans)
    trace_end = max(max(span.end_ns, span.start_ns) for span in spans)
    terminal = console.is_terminal
    for header_line in _header_lines(spans, trace_start, trace_end, console.width if terminal else None):
        # On a terminal a part wider than the screen (a long list of services) wraps rather than being cut.
        console.print(header_line, no_wrap=not terminal, crop=False)
    text_width = max(len(line.text) for line in lines)
    notes = [_notes(line.node) for line in lines]
    notes_width = max(note.cell_len for note in notes)
    mark_width = len(f" {ERROR_MARK}") if any(notes) else 0
    duration_width = DURATION_WIDTH
    room = console.width - (text_width + len(SEPARATOR) + duration_width + 1)
    if terminal and room - mark_width < MIN_BAR_WIDTH:
        # A deep tree on a narrow terminal: the durations give up their padding before the bar shrinks.
        duration_width = max(len(_ms(span.duration_ns)) for span in spans)
        room = console.width - (text_width + len(SEPARATOR) + duration_width + 1)
    notes_inline = not terminal or room - notes_width >= 2 * MIN_BAR_WIDTH
    if not terminal:
        bar_width = PIPE_BAR_WIDTH
    elif notes_inline:
        bar_width = room - notes_width
    else:
        # Whatever is left, however little: a bar cut off at the screen's edge would misplace the span.
        bar_width = max(1, room - mark_width)
    axis = _Axis(trace_start, trace_end, bar_width)
    listed: list[tuple[TreeLine, Text]] = []
    for line, note in zip(lines, notes, strict=True):
        text = _span_line(line, text_width, duration_width, axis, colours)
        if notes_inline:
            text.append_text(note)
        elif note:
            text.append_text(_error_mark(line.node))
            listed.append((line, note))
        console.print(text, no_wrap=True, crop=terminal, overflow="crop" if terminal else "ignore")
    if listed:
        console.print()
        for line, note in listed:
            span = line.node.span
            console.print(Text.assemble(f"{span.service} {span.kind} {span.name}:", note))


def _error_mark(node: Node) -> Text:
    return Text(f" {ERROR_MARK}", style="bold red") if node.span.is_error else Text()


def service_colours(services: Iterable[str]) -> dict[str, str]:
    """A stable colour per service, in order of first appearance."""
    colours: dict[str, str] = {}
    for service in services:
        colours.setdefault(service, SERVICE_COLOURS[len(colours) % len(SERVICE_COLOURS)])
    return colours


def _header_lines(spans: Sequence[Span], start_ns: int, end_ns: int, width: int | None) -> list[Text]:
    """`trace <id>  ·  11 spans  ·  17.18 ms  ·  services`: one line, or as many as `width` needs."""
    errors = sum(span.is_error for span in spans)
    parts = [
        Text.assemble(("trace ", "bold"), (spans[0].trace_id, "bold")),
        Text(f"{len(spans)} spans"),
        Text(_ms(end_ns - start_ns)),
        Text(", ".join(sorted({span.service for span in spans}))),
    ]
    if errors:
        parts.append(Text(f"{errors} error{'s' if errors > 1 else ''}", style="bold red"))
    lines = [parts[0]]
    for part in parts[1:]:
        if width is not None and lines[-1].cell_len + len(HEADER_GAP) + part.cell_len > width:
            lines.append(part)
        else:
            lines[-1] = Text.assemble(lines[-1], HEADER_GAP, part)
    return lines


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


def _span_line(
    line: TreeLine, text_width: int, duration_width: int, axis: _Axis, colours: Mapping[str, str]
) -> Text:
    """Text-form columns, separator, duration and the bar (notes are appended by the caller)."""
    span = line.node.span
    colour = colours[span.service]
    text = Text(line.text.ljust(text_width))
    # Colour the service column like its bar; the characters stay the text form.
    text.stylize(colour, len(line.prefix), len(line.prefix) + len(span.service))
    text.append(SEPARATOR, style="dim")
    text.append(f"{_ms(span.duration_ns):>{duration_width}} ")
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
