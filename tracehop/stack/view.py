"""How `up` and `status` look in the terminal: start progress, what runs where, next steps."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tracehop.stack.compose import PublishedPort
from tracehop.stack.runner import ComponentStatus, ReadyCallback

NEXT_STEPS = (
    "Next: [bold]make traffic[/] sends a mix of requests, [bold]make trace[/] shows the latest "
    "POST /api/users as a waterfall, [bold]make logs ID=<trace id>[/] its log lines, the trace viewer (first "
    "URL above) all of it in a browser; [bold]make down[/] stops everything."
)


@contextmanager
def start_progress(console: Console, components: Sequence[str], timeout: float) -> Iterator[ReadyCallback]:
    """A spinner per component until its readiness probe passes; yields the `on_ready` callback."""
    progress = Progress(
        SpinnerColumn(finished_text="[green]✓[/]"),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
    )
    tasks: dict[str, TaskID] = {
        name: progress.add_task(f"{name:<12} [dim]waiting (up to {timeout:.0f}s)[/]", total=1)
        for name in components
    }

    def on_ready(component: str, seconds: float) -> None:
        progress.update(
            tasks[component], completed=1, description=f"{component:<12} ready after {seconds:.1f}s"
        )
        # Elapsed time of a finished row stops at its ready moment.
        progress.stop_task(tasks[component])

    with progress:
        yield on_ready


def components_table(statuses: Sequence[ComponentStatus], title: str = "tracehop local stack") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("component", no_wrap=True)
    table.add_column("state")
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("url", no_wrap=True)
    for status in statuses:
        style = "green" if status.ready else "yellow" if status.state == "STARTING" else "red"
        table.add_row(
            status.component,
            f"[{style}]{escape(status.summary)}[/]",
            str(status.pid or ""),
            status.url,
        )
    return table


def urls_table(urls: dict[str, str], title: str = "URLs") -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("what")
    table.add_column("url")
    labels = {
        "query": "trace viewer (open in a browser) and query API /api/v3",
        "gateway": "gateway (public API)",
        "users": "users (internal)",
        "worker_metrics": "worker metrics (node worker)",
        "worker_b_metrics": "worker metrics (node worker-b)",
        "otlp": "OTLP/HTTP receiver",
        "prometheus": "Prometheus",
        "redis": "Redis (users DB, Celery broker)",
    }
    # The viewer first: it is where a person looks at what the rest produces.
    for key in sorted(urls, key=lambda key: key != "query"):
        table.add_row(labels.get(key, key), urls[key] + ("/" if key == "query" else ""))
    return table


def published_ports_table(ports: Sequence[PublishedPort]) -> Table:
    table = Table(title="docker compose: published ports", title_justify="left")
    table.add_column("service")
    table.add_column("url")
    for port in ports:
        table.add_row(port.service, port.url)
    return table


def failure_panel(title: str, output_tail: str) -> Panel:
    # Text, not markup: program output is full of [brackets].
    return Panel(
        Text(output_tail or "(no output)"), title=escape(title), title_align="left", border_style="red"
    )
