"""The search as it lives in the URL (`/?service=gateway&tags=tracehop.tenant%3Dacme&lookback=1h`).

Parameter names follow Jaeger's UI where it has one (service, operation, tags, minDuration, maxDuration,
lookback, limit); `errors=1` keeps traces with an error span and `parent=<service>` the traces where
`service` is called by `parent` (a service-map edge). `tags` is written as in Jaeger's search box:
`key=value` pairs separated by spaces, a value with spaces in double quotes.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlencode

from tracehop.traces.store.database import TraceSearch
from tracehop.traces.store.query_params import parse_go_duration_ns

LOOKBACKS = {"5m": 5 * 60, "15m": 15 * 60, "1h": 3600, "6h": 6 * 3600, "24h": 24 * 3600, "all": None}
LOOKBACK_LABELS = {
    "5m": "last 5 minutes",
    "15m": "last 15 minutes",
    "1h": "last hour",
    "6h": "last 6 hours",
    "24h": "last 24 hours",
    "all": "all stored",
}
DEFAULT_LOOKBACK = "1h"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
INT64_MAX = 2**63 - 1


class SearchFormError(ValueError):
    """A parameter of the search cannot be used; the message names it and says what fits."""


@dataclass(frozen=True)
class SearchForm:
    service: str = ""
    operation: str = ""
    tags: str = ""
    min_duration: str = ""
    max_duration: str = ""
    errors: bool = False
    lookback: str = DEFAULT_LOOKBACK
    limit: int = DEFAULT_LIMIT
    parent: str = ""
    attributes: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    def query_string(self, **changes: str) -> str:
        """The URL query of this search (with `changes`), only the parameters that differ from defaults."""
        params = {
            "service": self.service,
            "operation": self.operation,
            "tags": self.tags,
            "minDuration": self.min_duration,
            "maxDuration": self.max_duration,
            "errors": "1" if self.errors else "",
            "lookback": self.lookback if self.lookback != DEFAULT_LOOKBACK else "",
            "limit": str(self.limit) if self.limit != DEFAULT_LIMIT else "",
            "parent": self.parent,
        } | changes
        return urlencode({key: value for key, value in params.items() if value})

    def trace_search(self, now_ns: int | None = None, num_traces: int | None = None) -> TraceSearch:
        now_ns = time.time_ns() if now_ns is None else now_ns
        seconds = LOOKBACKS[self.lookback]
        return TraceSearch(
            service=self.service,
            start_min_ns=0 if seconds is None else now_ns - seconds * 10**9,
            start_max_ns=INT64_MAX,  # spans from a clock slightly ahead are still found
            operation=self.operation or None,
            num_traces=num_traces or self.limit,
            duration_min_ns=_duration(self.min_duration, "minDuration"),
            duration_max_ns=_duration(self.max_duration, "maxDuration"),
            attributes=self.attributes,
            errors_only=self.errors,
            parent_service=self.parent or None,
        )


def parse_search_form(args: Mapping[str, str]) -> SearchForm:
    """The search of a request's query parameters; SearchFormError names the one that does not fit."""
    lookback = args.get("lookback") or DEFAULT_LOOKBACK
    if lookback not in LOOKBACKS:
        raise SearchFormError(f"lookback must be one of {', '.join(LOOKBACKS)}, not {lookback!r}")
    limit_text = args.get("limit") or str(DEFAULT_LIMIT)
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise SearchFormError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit_text!r}")
    tags = (args.get("tags") or "").strip()
    form = SearchForm(
        service=(args.get("service") or "").strip(),
        operation=(args.get("operation") or "").strip(),
        tags=tags,
        min_duration=(args.get("minDuration") or "").strip(),
        max_duration=(args.get("maxDuration") or "").strip(),
        errors=args.get("errors") in ("1", "on", "true"),
        lookback=lookback,
        limit=int(limit_text),
        parent=(args.get("parent") or "").strip(),
        attributes=parse_tags(tags),
    )
    form.trace_search(0)  # checks the durations now, so the page can say what is wrong
    return form


def form_as_typed(args: Mapping[str, str]) -> SearchForm:
    """The search as the person typed it, for showing it back next to the error (never raises)."""
    lookback = args.get("lookback", "")
    limit = args.get("limit", "")
    return SearchForm(
        service=args.get("service", ""),
        operation=args.get("operation", ""),
        tags=args.get("tags", ""),
        min_duration=args.get("minDuration", ""),
        max_duration=args.get("maxDuration", ""),
        errors=args.get("errors") in ("1", "on", "true"),
        lookback=lookback if lookback in LOOKBACKS else DEFAULT_LOOKBACK,
        limit=int(limit) if limit.isdigit() and 1 <= int(limit) <= MAX_LIMIT else DEFAULT_LIMIT,
        parent=args.get("parent", ""),
    )


def parse_tags(text: str) -> tuple[tuple[str, str], ...]:
    """`http.response.status_code=500 tenant="a b"` -> (("http.response.status_code", "500"), ...)."""
    try:
        words = shlex.split(text)
    except ValueError as error:
        raise SearchFormError(f"tags: {error} (close the quotes around a value)") from None
    pairs = []
    for word in words:
        key, separator, value = word.partition("=")
        if not separator or not key:
            raise SearchFormError(f"tags: {word!r} is not key=value (example: tracehop.tenant=acme)")
        pairs.append((key, value))
    return tuple(pairs)


def _duration(text: str, name: str) -> int | None:
    if not text:
        return None
    try:
        return parse_go_duration_ns(text)
    except ValueError:
        raise SearchFormError(f"{name}: {text!r} is not a duration like 100ms, 1.5s or 2m") from None
