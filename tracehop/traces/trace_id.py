"""Trace ids as people and clients have them, made into the one form tracehop stores and asks for.

One rule for everything a person types or pastes: `tracehop trace` / `tracehop logs` (`make trace ID=…`)
and the trace viewer's paste box and `/trace/<id>` page. The store's query API (`/api/v3/traces/<id>`) is a
wire protocol and follows Jaeger's own rule instead (hex of up to 32 digits, or base64:
`tracehop.traces.store.query_params.parse_trace_id`), so a tool written for Jaeger gets Jaeger's answers.
"""

from __future__ import annotations

import re

# 32 hex digits, or 16: a 64-bit id of an older tracer (B3, Jaeger's own clients), left-padded with zeros
# as Jaeger's query API does.
TRACE_ID = re.compile(r"[0-9a-f]{32}|[0-9a-f]{16}")
# W3C Trace Context: `version-trace_id-parent_id-flags`, the form of both `traceparent` and `traceresponse`.
# Version 00 has exactly these four fields; a later version may append more, so only 00 is held to four.
TRACE_CONTEXT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<parent_id>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})"
    r"(?P<rest>-.*)?"
)
# What people paste: the header line as `curl -i` prints it, or just its value, maybe quoted.
HEADER_NAME = re.compile(r"^(?:traceparent|traceresponse)\s*:\s*", re.IGNORECASE)


class InvalidTraceId(ValueError):
    """The text is not a trace id; the message says which forms are."""


def normalise_trace_id(raw: str) -> str:
    """A trace id as the query API wants it (32 lowercase hex digits), from the forms people have it in.

    Accepted: the 32 hex digits (`make traffic`, a JSON error's `trace_id`, a log line), 16 hex digits
    (a 64-bit id, zero-padded), or a whole `traceparent` / `traceresponse` value
    `00-<trace id>-<span id>-<flags>`, with or without its header name (`traceresponse: 00-…` as `curl -i`
    shows it), in any case, quoted or not.
    """
    text = _unquote(HEADER_NAME.sub("", _unquote(raw))).lower()
    if TRACE_ID.fullmatch(text):
        return _valid(text.rjust(32, "0"), raw)
    match = TRACE_CONTEXT.fullmatch(text)
    if match is None:
        raise InvalidTraceId(
            f"{raw!r} is not a trace id: give its 32 hex digits (as `make traffic` prints them) or a whole "
            "traceparent/traceresponse value, 00-<trace id>-<span id>-<flags>"
        )
    if match["version"] == "ff" or (match["version"] == "00" and match["rest"]):
        raise InvalidTraceId(f"{raw!r} is not a valid traceparent/traceresponse value (W3C Trace Context)")
    return _valid(match["trace_id"], raw)


def _unquote(text: str) -> str:
    return text.strip().strip("'\"`").strip()


def _valid(trace_id: str, raw: str) -> str:
    if trace_id == "0" * 32:
        raise InvalidTraceId(f"{raw!r}: an all-zero trace id is invalid (W3C Trace Context)")
    return trace_id
