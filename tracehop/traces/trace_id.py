"""Trace ids as a person types them or a client sends them, made into the one form tracehop stores.

Used by the trace store's query API (`/api/v3/traces/<id>`) and by `tracehop trace` / `tracehop logs`.
"""

from __future__ import annotations

import re

_HEX_ID = re.compile(r"[0-9a-f]{1,32}")


class InvalidTraceId(ValueError):
    """The text is not a trace id; the message says what one looks like."""


def normalise_trace_id(text: str) -> str:
    """32 lowercase hex digits, from a trace id in any case, with surrounding whitespace, or shorter:
    a shorter id (a 64-bit id of an older tracer) is left-padded with zeros, as Jaeger's query API does."""
    candidate = text.strip().lower()
    if not _HEX_ID.fullmatch(candidate):
        raise InvalidTraceId(f"{text!r} is not a trace id (up to 32 hex digits, as `make traffic` prints)")
    return candidate.rjust(32, "0")
