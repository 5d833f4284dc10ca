"""The query API v3's parameters, parsed the way Jaeger 2.20 parses them.

Each function names the Jaeger file it follows (tag v2.20.0, `apiv3/` =
cmd/jaeger/internal/extension/jaegerquery/internal/apiv3/). The rules that matter to a client:
- camelCase names are canonical (since 2.19); the snake_case ones are deprecated aliases, read only when the
  canonical name is absent or empty, and an error names the spelling that was sent (`getQueryParam`);
- the search window is required and its minimum must be before its maximum; the service is optional;
- `query.searchDepth` (aliases `query.search_depth`, then `query.num_traces`) defaults to 100;
- `query.attributes` is a JSON object of strings;
- a trace id is hex (up to 32 digits) or the base64 of 8 or 16 bytes.

One difference on purpose: a search depth <= 0 is refused here as a malformed parameter (400), where
Jaeger's parser accepts it and its memory store then fails the search with a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from tracehop.traces.store.otlp import BadRequest

DEFAULT_SEARCH_DEPTH = 100  # apiv3/query_parser.go defaultSearchDepth

# apiv3/query_parser.go: canonical name -> deprecated alias.
SERVICE_NAME = ("query.serviceName", "query.service_name")
OPERATION_NAME = ("query.operationName", "query.operation_name")
TIME_MIN = ("query.startTimeMin", "query.start_time_min")
TIME_MAX = ("query.startTimeMax", "query.start_time_max")
SEARCH_DEPTH = ("query.searchDepth", "query.search_depth")
NUM_TRACES = "query.num_traces"  # a further alias of the depth, read last
DURATION_MIN = ("query.durationMin", "query.duration_min")
DURATION_MAX = ("query.durationMax", "query.duration_max")
QUERY_RAW_TRACES = ("query.rawTraces", "query.raw_traces")
ATTRIBUTES = "query.attributes"
START_TIME = ("startTime", "start_time")
END_TIME = ("endTime", "end_time")
RAW_TRACES = ("rawTraces", "raw_traces")
SPAN_KIND = ("spanKind", "span_kind")

Query = Mapping[str, list[str]]  # parse_qs(..., keep_blank_values=True)


@dataclass(frozen=True)
class SearchParams:
    """`GET /api/v3/traces` and `/api/v3/trace-summaries`, times and durations in nanoseconds.

    `service`, `operation` "" and durations None mean "any". `attributes` in the order given.
    """

    start_min_ns: int
    start_max_ns: int
    service: str = ""
    operation: str = ""
    depth: int = DEFAULT_SEARCH_DEPTH
    duration_min_ns: int | None = None
    duration_max_ns: int | None = None
    attributes: tuple[tuple[str, str], ...] = ()
    raw_traces: bool = False


def get_param(query: Query, canonical: str, deprecated: str = "") -> tuple[str, str]:
    """(value, name read): the canonical name's first value, else the alias's (apiv3 getQueryParam)."""
    value = _first(query, canonical)
    if value or not deprecated:
        return value, canonical
    return _first(query, deprecated), deprecated


def _first(query: Query, name: str) -> str:
    values = query.get(name)
    return values[0] if values else ""  # url.Values.Get: the first value, "" when absent


def parse_search(query: Query) -> SearchParams:
    """apiv3/query_parser.go parseFindTracesQuery, in its order (the first problem found is reported)."""
    attributes = _attributes(_first(query, ATTRIBUTES))
    min_text, min_name = get_param(query, *TIME_MIN)
    max_text, max_name = get_param(query, *TIME_MAX)
    if not min_text or not max_text:
        raise BadRequest(f"{TIME_MIN[0]} and {TIME_MAX[0]} are required")
    start_min = _malformed(min_name, parse_rfc3339_ns, min_text)
    start_max = _malformed(max_name, parse_rfc3339_ns, max_text)
    if not start_min < start_max:
        raise BadRequest(f"{TIME_MIN[0]} must be before {TIME_MAX[0]}")
    depth_text, depth_name = get_param(query, *SEARCH_DEPTH)
    if not depth_text:
        depth_text, depth_name = _first(query, NUM_TRACES), NUM_TRACES
    depth = _malformed(depth_name, parse_go_int, depth_text) if depth_text else DEFAULT_SEARCH_DEPTH
    if depth <= 0:
        # Kept different on purpose: Jaeger's memory store answers 500 for this.
        raise BadRequest(f"malformed parameter {depth_name}: must be greater than 0")
    return SearchParams(
        start_min_ns=start_min,
        start_max_ns=start_max,
        service=get_param(query, *SERVICE_NAME)[0],
        operation=get_param(query, *OPERATION_NAME)[0],
        depth=depth,
        duration_min_ns=_duration(query, DURATION_MIN),
        duration_max_ns=_duration(query, DURATION_MAX),
        attributes=attributes,
        raw_traces=_bool(query, QUERY_RAW_TRACES),
    )


def check_get_trace_params(query: Query) -> None:
    """apiv3/http_gateway.go getTrace: startTime, endTime and rawTraces must parse when present.

    The memory store reads a trace by id only, so a valid window changes nothing, as here.
    """
    for names in (START_TIME, END_TIME):
        text, name = get_param(query, *names)
        if text:
            _malformed(name, parse_rfc3339_ns, text)
    _bool(query, RAW_TRACES)


def _duration(query: Query, names: tuple[str, str]) -> int | None:
    text, name = get_param(query, *names)
    if not text:
        return None
    nanoseconds = _malformed(name, parse_go_duration_ns, text)
    return nanoseconds or None  # memory/tenant.go validSpan: a zero bound is no bound


def _bool(query: Query, names: tuple[str, str]) -> bool:
    text, name = get_param(query, *names)
    return _malformed(name, parse_go_bool, text) if text else False


def _attributes(text: str) -> tuple[tuple[str, str], ...]:
    """json.Unmarshal into map[string]string: an object of strings (`null` is no attribute at all)."""
    if not text:
        return ()
    try:
        document = json.loads(text)
    except ValueError as error:
        raise BadRequest(f"malformed parameter {ATTRIBUTES}: {error}") from None
    if document is None:
        return ()
    if not isinstance(document, dict) or not all(isinstance(value, str) for value in document.values()):
        raise BadRequest(f"malformed parameter {ATTRIBUTES}: must be a JSON object of strings, got {text!r}")
    return tuple(document.items())


def _malformed(name: str, parse, text: str):  # type: ignore[no-untyped-def]
    try:
        return parse(text)
    except ValueError as error:
        raise BadRequest(f"malformed parameter {name}: {error}") from None


# ------------------------------------------------------------------------------------ Go's value syntaxes

_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})T(?P<time>\d{2}:\d{2}:\d{2})(?:[.,](?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2})"
)


def parse_rfc3339_ns(text: str) -> int:
    """time.Parse(time.RFC3339Nano, text) -> Unix nanoseconds ('T' and 'Z' in capitals, as Go wants)."""
    match = _RFC3339.fullmatch(text)
    if not match:
        raise ValueError(f"{text!r} is not an RFC 3339 time like 2026-01-02T15:04:05.123Z")
    zone = "+00:00" if match["zone"] == "Z" else match["zone"]
    moment = datetime.fromisoformat(f"{match['date']}T{match['time']}{zone}")
    fraction = (match["fraction"] or "")[:9].ljust(9, "0")  # Go keeps nanoseconds, drops further digits
    return int(moment.timestamp()) * 10**9 + int(fraction)


_DURATION_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9}
_DURATION_UNITS_NS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration_ns(text: str) -> int:
    """time.ParseDuration: `100ms`, `1.5s`, `-1h2m`, `0` -> nanoseconds."""
    sign = -1 if text.startswith("-") else 1
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0
    parts = _DURATION_PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise ValueError(f"{text!r} is not a duration like 100ms, 1.5s or 2m")
    return sign * round(sum(float(number) * _DURATION_UNITS_NS[unit] for number, unit in parts))


def parse_go_int(text: str) -> int:
    """strconv.Atoi: an optional sign and decimal digits, within 64 bits."""
    if not re.fullmatch(r"[+-]?\d+", text) or not -(2**63) <= int(text) < 2**63:
        raise ValueError(f"{text!r} is not an integer")
    return int(text)


_GO_BOOLS = {"1": True, "t": True, "T": True, "TRUE": True, "true": True, "True": True}
_GO_BOOLS |= {"0": False, "f": False, "F": False, "FALSE": False, "false": False, "False": False}


def parse_go_bool(text: str) -> bool:
    """strconv.ParseBool."""
    if text not in _GO_BOOLS:
        raise ValueError(f"{text!r} is not a boolean (true or false)")
    return _GO_BOOLS[text]


# -------------------------------------------------------------------------------------------- trace ids

_HEX_ID = re.compile(r"[0-9a-fA-F]{1,32}")


def parse_trace_id(text: str) -> str:
    """apiv3/http_gateway.go TraceIDFromString: hex of up to 32 digits (left-padded with zeros), else
    standard, URL-safe, padded or unpadded base64 of 8 or 16 bytes -> 32 lowercase hex digits."""
    if _HEX_ID.fullmatch(text):
        return text.lower().rjust(32, "0")
    problem = f"{text!r} is neither a hex trace id of up to 32 digits nor the base64 of 8 or 16 bytes"
    if len(text) > 24:  # 16 bytes are 24 base64 characters with padding
        raise BadRequest(f"malformed parameter trace_id: {problem}")
    for decode in (_std, _url, _raw_std, _raw_url):
        try:
            data = decode(text)
        except (binascii.Error, ValueError):
            continue
        # The first encoding that decodes decides, as in Jaeger (model.TraceIDFromBytes).
        if len(data) not in (8, 16):
            raise BadRequest(f"malformed parameter trace_id: {problem} ({len(data)} bytes)")
        return data.hex().rjust(32, "0")
    raise BadRequest(f"malformed parameter trace_id: {problem}")


def _std(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _url(text: str) -> bytes:
    if "+" in text or "/" in text:  # b64decode would take them too, after mapping - and _ onto them
        raise ValueError("not URL-safe base64")
    return base64.b64decode(text, altchars=b"-_", validate=True)


def _raw_std(text: str) -> bytes:
    return _std(_padded(text))


def _raw_url(text: str) -> bytes:
    return _url(_padded(text))


def _padded(text: str) -> str:
    if "=" in text or len(text) % 4 == 1:
        raise ValueError("not unpadded base64")
    return text + "=" * (-len(text) % 4)
