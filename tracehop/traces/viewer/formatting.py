"""Durations, times and attribute values as the pages print them (Jaeger's style: 12.3ms, 1.52s)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any


def duration(ns: int) -> str:
    """A duration with 3 significant digits in the largest fitting unit: 850μs, 12.3ms, 1.52s, 2.5min."""
    if ns < 1_000:
        return f"{ns}ns"
    for unit, size in (("s", 10**9), ("ms", 10**6), ("μs", 10**3)):
        if ns >= size:
            value = ns / size
            if unit == "s" and value >= 120:
                return f"{value / 60:.3g}min"
            return f"{value:.3g}{unit}"
    return f"{ns}ns"  # unreachable: ns >= 1000 fits μs


def clock(ns: int) -> str:
    """Wall-clock time in UTC to the millisecond: 2026-11-29 19:40:01.123."""
    moment = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def time_of_day(ns: int) -> str:
    moment = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def value(item: Any) -> str:
    """An attribute or log field value as text: strings as they are, everything else as JSON."""
    if isinstance(item, str):
        return item
    if isinstance(item, bytes):
        return item.hex()
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False, default=str)
