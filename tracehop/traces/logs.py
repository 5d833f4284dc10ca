"""`make logs ID=...`: every log line of one trace, from every service's log file, in time order."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

# Fields every line has; the others are the event's own (user_id, task, job_id, ...).
STANDARD_FIELDS = ("ts", "level", "service", "message", "logger", "trace_id", "span_id")

LEVEL_STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}

_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    fields: dict[str, Any]
    raw: str
    source: Path

    @property
    def extra_fields(self) -> dict[str, Any]:
        return {key: value for key, value in self.fields.items() if key not in STANDARD_FIELDS}


def parse_timestamp(value: object) -> datetime:
    """RFC 3339 (`...Z` or `+00:00`) to an aware datetime; unparsable values sort first."""
    if not isinstance(value, str):
        return _EPOCH
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return _EPOCH
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def read_trace_logs(log_dir: Path, trace_id: str) -> list[LogLine]:
    """Lines of every `log_dir/*.log` whose trace_id is `trace_id`, oldest first.

    Lines that are not JSON (a stray print, a line cut by a crash) are skipped, not fatal.
    """
    wanted = trace_id.lower()
    found: list[LogLine] = []
    for path in sorted(log_dir.glob("*.log")):
        with path.open(encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                # Cheap filter before parsing: most lines belong to other traces.
                if wanted not in raw.lower():
                    continue
                try:
                    fields = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(fields, dict) and str(fields.get("trace_id", "")).lower() == wanted:
                    found.append(LogLine(parse_timestamp(fields.get("ts")), fields, raw.rstrip("\n"), path))
    # sorted() is stable: lines with the same timestamp keep their file order.
    return sorted(found, key=lambda line: line.timestamp)


def logs_table(lines: Sequence[LogLine], trace_id: str) -> Table:
    # Short fixed columns first; the message, with the line's own fields under it, takes the rest of the
    # width and wraps there (between fields, not inside every column) on a narrow terminal.
    table = Table(
        title=f"logs of trace {trace_id}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("ts (UTC)", no_wrap=True)
    table.add_column("service", no_wrap=True)
    table.add_column("level", no_wrap=True)
    table.add_column("message and fields", overflow="fold")
    for line in lines:
        level = str(line.fields.get("level", ""))
        style = LEVEL_STYLES.get(level.upper(), "")
        text = escape(str(line.fields.get("message", "")))
        fields = " ".join(f"{key}={_compact(value)}" for key, value in line.extra_fields.items())
        if fields:
            text += f"\n[dim]{escape(fields)}[/]"
        table.add_row(
            _time_of_day(line),
            escape(str(line.fields.get("service", line.source.stem))),
            f"[{style}]{escape(level)}[/]" if style else escape(level),
            text,
        )
    return table


def _time_of_day(line: LogLine) -> str:
    if line.timestamp == _EPOCH:
        return str(line.fields.get("ts", "?"))
    return line.timestamp.astimezone(UTC).strftime("%H:%M:%S.%f")


def _compact(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
