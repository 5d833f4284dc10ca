"""The arithmetic of `make bench`: percentiles, medians with their range, CPU-probe normalisation.

Pure functions, no I/O: the unit tests pin down exactly how each reported number is derived.

Why normalise at all: the CPU speed of the machines this runs on drifts by about 1.5x from minute to
minute (design/benchmark-notes.md). A small fixed loop (the CPU probe) runs during every load window; when
it takes longer, the machine was slower, and that window's throughput is scaled up by the same factor.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; None when empty.

    The same definition as numpy's default, so a reader can check a number with any tool.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be between 0 and 100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_percentiles_ms(latencies_s: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in milliseconds of latencies given in seconds."""
    return {
        "p50_ms": _ms(percentile(latencies_s, 50)),
        "p95_ms": _ms(percentile(latencies_s, 95)),
        "p99_ms": _ms(percentile(latencies_s, 99)),
        "max_ms": _ms(max(latencies_s) if latencies_s else None),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


@dataclass(frozen=True)
class Spread:
    """A median with the range it came from: one number alone hides how noisy the machine was."""

    median: float
    low: float
    high: float
    n: int

    def as_dict(self, digits: int = 3) -> dict[str, float | int]:
        return {
            "median": round(self.median, digits),
            "low": round(self.low, digits),
            "high": round(self.high, digits),
            "n": self.n,
        }


def spread(values: Iterable[float | None]) -> Spread | None:
    """Median, min and max of the values that are not None; None when there are none."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    return Spread(statistics.median(present), min(present), max(present), len(present))


def median(values: Iterable[float | None]) -> float | None:
    summary = spread(values)
    return None if summary is None else summary.median


def normalise_rps(rps: float, probe_ms: float | None, reference_ms: float | None) -> float:
    """Throughput as if the machine had run at its reference speed.

    A probe that took 20% longer than the reference means a 20% slower machine: the throughput it
    allowed is scaled up by 1.2. Without a probe reading the raw number is the best there is.
    """
    if not probe_ms or not reference_ms:
        return rps
    return rps * probe_ms / reference_ms


def normalise_cpu_ms(cpu_ms: float, probe_ms: float | None, reference_ms: float | None) -> float:
    """CPU time as the machine would have spent it at its reference speed: `normalise_rps` the other way
    round. A probe that took 20% longer means every CPU millisecond bought 20% less work, so the CPU
    counts 1/1.2 of itself. On a host whose speed holds (probe within a few % all run) it changes
    nothing; on one that drifts (probe 10.6-16.4 ms within 12 minutes, 2026-11-30) it keeps the drift
    out of the comparison."""
    if not probe_ms or not reference_ms:
        return cpu_ms
    return cpu_ms * reference_ms / probe_ms


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def paired_ratios(traced: Sequence[float], untraced: Sequence[float]) -> list[float]:
    """traced[i] / untraced[i] for each round: the rounds alternate, so each pair saw similar noise."""
    return [t / u for t, u in zip(traced, untraced, strict=False) if u]


def round_or_none(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


# Each fixed-rate window keeps its slowest tenth of latencies: enough for the p99 of all windows together
# unless one window holds more than a tenth of its own requests above that p99 (then `pooled_percentile`
# says it cannot tell, rather than guess).
KEPT_TAIL_SHARE = 0.10


def slowest(values: Sequence[float], share: float = KEPT_TAIL_SHARE) -> list[float]:
    """The slowest `share` of the values (at least one, when there are any), slowest first."""
    ordered = sorted(values, reverse=True)
    return ordered[: max(1, math.ceil(len(ordered) * share))] if ordered else []


def pooled_percentile(windows: Sequence[tuple[int, Sequence[float]]], q: float) -> float | None:
    """The q-th percentile (as `percentile` defines it) of all windows' values together, from each
    window's (count, slowest values, slowest first): exact, or None when the kept values do not decide it.

    Why pool: at 100 req/s a 15 s window has 1,500 requests, so its p99 is its 15th-slowest request, and
    a median of five such figures still moves by milliseconds from run to run; five windows pooled give
    the 75th-slowest of 7,500.
    """
    total = sum(count for count, _ in windows)
    if total == 0:
        return None
    rank = (total - 1) * q / 100
    low, high = math.floor(rank), min(math.floor(rank) + 1, total - 1)
    top_low, top_high = total - 1 - low, total - 1 - high  # positions from the slowest, top_high <= top_low
    kept = sorted((value for _, values in windows for value in values), reverse=True)
    if top_low >= len(kept):
        return None
    # A window whose values were not all kept may hold unkept ones up to its fastest kept one: the order
    # of the kept values is the true order only above every such bound.
    bound = max((min(values) for count, values in windows if 0 < len(values) < count), default=-math.inf)
    if kept[top_low] < bound:
        return None
    at_low, at_high = kept[top_low], kept[top_high]
    return at_low + (at_high - at_low) * (rank - low)
