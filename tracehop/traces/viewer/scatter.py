"""The search results as Jaeger's scatter plot: one dot per trace, start time across, duration up.

Drawn on the server as SVG coordinates (no script, no inline style): the dot's size grows with the
trace's span count, its colour is the root service's, red when the trace has an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tracehop.traces.viewer import formatting
from tracehop.traces.viewer.summaries import TraceSummary

HEIGHT = 130  # px; across, positions are percentages of the page's width (circles stay round)
LEFT, RIGHT = 2.0, 98.0  # % of the width
MARGIN_Y = 14


@dataclass(frozen=True)
class Dot:
    trace_id: str
    x: float  # % of the width
    y: float  # px
    radius: float
    colour: int
    error: bool
    title: str


@dataclass(frozen=True)
class Scatter:
    dots: list[Dot]
    y_labels: list[tuple[float, str]]  # (y in px, duration) for the grid
    x_labels: list[str]  # times of day at the left, middle and right
    height: int = HEIGHT


def scatter(results: Sequence[TraceSummary]) -> Scatter | None:
    if len(results) < 2:
        return None
    first = min(result.start_ns for result in results)
    last = max(result.start_ns for result in results)
    longest = max(1, max(result.duration_ns for result in results))
    span_ns = max(1, last - first)
    plot_height = HEIGHT - 2 * MARGIN_Y

    def x_of(ns: int) -> float:
        return round(LEFT + (ns - first) * (RIGHT - LEFT) / span_ns, 2)

    def y_of(duration_ns: int) -> float:
        return round(HEIGHT - MARGIN_Y - duration_ns * plot_height / longest, 1)

    dots = [
        Dot(
            result.trace_id,
            x_of(result.start_ns),
            y_of(result.duration_ns),
            round(min(3 + result.spans**0.5, 12), 1),
            result.root_colour,
            bool(result.errors),
            f"{result.root_service}: {result.root_name} · {result.duration} · {result.spans} spans"
            + (f" · {result.errors} errors" if result.errors else ""),
        )
        for result in results
    ]
    y_labels = [(y_of(longest * step // 2), formatting.duration(longest * step // 2)) for step in (0, 1, 2)]
    x_labels = [formatting.time_of_day(first + span_ns * step // 2) for step in (0, 1, 2)]
    return Scatter(dots, y_labels, x_labels)
