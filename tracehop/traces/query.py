"""Client of the Jaeger query API v3, as served by Jaeger 2.x and by our local trace store.

Only documented v3 endpoints are used, with the camelCase parameter names of Jaeger's published OpenAPI
(`query.serviceName`, `query.searchDepth`, ...). Jaeger 2.19 made them canonical and kept the older
snake_case names as deprecated aliases (`apiv3/query_parser.go`); the local store accepts both spellings
too. So the same code works against `python -m tracehop trace-store` and a real Jaeger >= 2.19 unchanged.

The answer is OTLP/JSON. `spans_from_otlp_json` turns it into flat `Span` values: the one parser shared by
tests, the waterfall and anything else that reads traces back.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

from tracehop.traces.tree import build_tree, render_text

# OTLP enum values. JSON encoders may send the integer (Jaeger does) or the proto enum name.
SPAN_KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}

DEFAULT_POLL_INTERVAL = 0.1

_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class Span:
    """One span, flattened: the resource's service name and attributes travel with it.

    Frozen so a span read back cannot be altered by accident; its dict/list fields make it unhashable,
    so key spans by `span_id`.
    """

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    parent_span_id: str  # 16 lowercase hex, "" for a root
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER or INTERNAL
    service: str  # resource attribute service.name
    start_ns: int
    end_ns: int
    status_code: str = "UNSET"  # UNSET, OK or ERROR
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)  # (name, attributes, time_ns)
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace_id, span_id)
    resource: dict[str, Any] = field(default_factory=dict)

    @property
    def duration_ns(self) -> int:
        # An unfinished or clock-skewed span must not produce a negative bar or duration.
        return max(0, self.end_ns - self.start_ns)

    @property
    def is_error(self) -> bool:
        return self.status_code == "ERROR"


# --------------------------------------------------------------------------------------------- OTLP/JSON


def spans_from_otlp_json(payload: Mapping[str, Any]) -> list[Span]:
    """Flatten an OTLP/JSON document into spans.

    Accepts Jaeger's v3 envelope (`{"result": {"resourceSpans": [...]}}`) or a bare `TracesData`
    (`{"resourceSpans": [...]}`). Fields at their default value may be omitted (Jaeger omits an empty
    `parentSpanId`, a zero `kind`, ...), so every field is read with a default.
    """
    data = payload.get("result", payload)
    spans: list[Span] = []
    for resource_spans in data.get("resourceSpans") or []:
        resource = attributes_from_json((resource_spans.get("resource") or {}).get("attributes"))
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.get("scopeSpans") or []:
            for span in scope_spans.get("spans") or []:
                spans.append(_span_from_json(span, service, resource))
    return spans


def _span_from_json(span: Mapping[str, Any], service: str, resource: dict[str, Any]) -> Span:
    status = span.get("status") or {}
    return Span(
        trace_id=id_from_json(span.get("traceId")),
        span_id=id_from_json(span.get("spanId")),
        parent_span_id=id_from_json(span.get("parentSpanId")),
        name=span.get("name", ""),
        kind=_enum_name(span.get("kind", 0), SPAN_KINDS, "SPAN_KIND_"),
        service=service,
        start_ns=int(span.get("startTimeUnixNano", 0)),
        end_ns=int(span.get("endTimeUnixNano", 0)),
        status_code=_enum_name(status.get("code", 0), STATUS_CODES, "STATUS_CODE_"),
        status_message=status.get("message", ""),
        attributes=attributes_from_json(span.get("attributes")),
        events=[
            (
                event.get("name", ""),
                attributes_from_json(event.get("attributes")),
                int(event.get("timeUnixNano", 0)),
            )
            for event in span.get("events") or []
        ],
        links=[
            (id_from_json(link.get("traceId")), id_from_json(link.get("spanId")))
            for link in span.get("links") or []
        ],
        resource=resource,
    )


def id_from_json(value: str | None) -> str:
    """Return a trace/span id as lowercase hex.

    OTLP/JSON mandates hex, but a generic proto3 JSON encoder writes `bytes` as base64; accepting both
    means a misconfigured backend shows up as wrong data in a test rather than a crash in the parser.
    """
    if not value:
        return ""
    if _HEX.fullmatch(value):
        return value.lower()
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        raise ValueError(f"id {value!r} is neither hex nor base64") from None


def _enum_name(value: int | str, names: Mapping[int, str], prefix: str) -> str:
    if isinstance(value, str) and not value.isdigit():
        name = value.removeprefix(prefix)
        return "INTERNAL" if name == "UNSPECIFIED" else name
    return names.get(int(value), str(value))


def attributes_from_json(attributes: list[Mapping[str, Any]] | None) -> dict[str, Any]:
    """Turn OTLP/JSON `KeyValue` entries into a plain dict of Python values."""
    return {item["key"]: any_value_from_json(item.get("value") or {}) for item in attributes or []}


def any_value_from_json(value: Mapping[str, Any]) -> Any:
    """Convert one OTLP/JSON `AnyValue` (64-bit ints arrive as decimal strings) to a Python value."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "arrayValue" in value:
        return [any_value_from_json(item) for item in (value["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in value:
        return attributes_from_json((value["kvlistValue"] or {}).get("values"))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def group_by_trace(spans: list[Span]) -> dict[str, list[Span]]:
    """Group spans by trace id, most recent trace (latest first span) first."""
    traces: dict[str, list[Span]] = {}
    for span in spans:
        traces.setdefault(span.trace_id, []).append(span)
    ordered = sorted(traces.items(), key=lambda item: min(s.start_ns for s in item[1]), reverse=True)
    return dict(ordered)


# ------------------------------------------------------------------------------------------------ client


class QueryAPIError(RuntimeError):
    """The query API answered with an unexpected status; the message carries its error body."""


class TraceQuery:
    """Read traces from a Jaeger query API v3 (`base_url` like `http://127.0.0.1:16686`)."""

    def __init__(self, base_url: str, timeout: float = 5.0, session: requests.Session | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        # Loopback traffic must never go through a proxy configured in the environment.
        self.session.trust_env = False

    def get_trace(self, trace_id: str) -> list[Span] | None:
        """All spans of one trace, or None when the backend does not know it (yet)."""
        payload = self._get_json(f"/api/v3/traces/{trace_id.lower()}")
        return None if payload is None else spans_from_otlp_json(payload)

    def search(
        self,
        service: str | None,
        start: datetime,
        end: datetime,
        limit: int = 20,
        operation: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> dict[str, list[Span]]:
        """Traces with a span of `service` (and `operation`) starting in [start, end], most recent first.

        `service` None searches every service. `attributes`: `key -> value` that one span must carry (its own,
        its resource's, one of its events'); Jaeger also reads the special keys `error`, `span.kind`,
        `span.status`, `scope.name` and `resource.<key>`.
        """
        payload = self._get_json(
            "/api/v3/traces", search_params(service, start, end, limit, operation, attributes)
        )
        return {} if payload is None else group_by_trace(spans_from_otlp_json(payload))

    def trace_summaries(
        self,
        service: str | None,
        start: datetime,
        end: datetime,
        limit: int = 20,
        operation: str | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> list[TraceSummary]:
        """One `TraceSummary` per matching trace (`GET /api/v3/trace-summaries`, Jaeger >= 2.19), in the
        backend's order; same arguments as `search`, but no span is transferred."""
        params = search_params(service, start, end, limit, operation, attributes)
        payload = self._get_json("/api/v3/trace-summaries", params) or {}
        return [TraceSummary.from_json(item) for item in payload.get("summaries") or []]

    def services(self) -> list[str]:
        """Names of the services the backend has seen, sorted."""
        payload = self._get_json("/api/v3/services") or {}
        return sorted(payload.get("services") or [])

    def operations(self, service: str, span_kind: str | None = None) -> list[tuple[str, str]]:
        """(name, spanKind) of every operation of `service` (of one kind: `server`, ...), sorted."""
        params = {"service": service} | ({"spanKind": span_kind} if span_kind else {})
        payload = self._get_json("/api/v3/operations", params) or {}
        return sorted((op.get("name", ""), op.get("spanKind", "")) for op in payload.get("operations") or [])

    def wait_for_trace(
        self,
        trace_id: str,
        until: Callable[[list[Span]], bool] | None = None,
        timeout: float = 10.0,
        interval: float = DEFAULT_POLL_INTERVAL,
    ) -> list[Span]:
        """Poll until the trace exists and `until(spans)` holds; return its spans.

        Spans arrive late (batch processors, a worker finishing a job), so tests wait for the condition
        they need, e.g. `until=lambda spans: len(spans) >= 9`, instead of sleeping. Connection errors are
        retried until the deadline because the backend may still be starting. On timeout, the TimeoutError
        shows the tree that was there, which usually explains what is missing.
        """
        deadline = time.monotonic() + timeout
        spans: list[Span] | None = None
        last_error: Exception | None = None
        while True:
            try:
                spans = self.get_trace(trace_id)
                last_error = None
            except (requests.ConnectionError, requests.Timeout) as error:
                last_error = error
            if spans and (until is None or until(spans)):
                return spans
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(_describe_timeout(trace_id, timeout, spans, last_error))
            time.sleep(min(interval, remaining))

    def _get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any | None:
        """GET and decode JSON; None on 404 (Jaeger's answer for "no such trace" and "no match")."""
        response = self.session.get(self.base_url + path, params=params, timeout=self.timeout)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise QueryAPIError(
                f"GET {response.url} -> {response.status_code}: {response.text.strip()[:500]}"
            )
        return response.json()


def search_params(
    service: str | None,
    start: datetime,
    end: datetime,
    limit: int,
    operation: str | None = None,
    attributes: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Query string of a trace search under the canonical (camelCase) names of Jaeger's OpenAPI."""
    params = {
        "query.startTimeMin": format_rfc3339(start),
        "query.startTimeMax": format_rfc3339(end),
        "query.searchDepth": str(limit),
    }
    if service:
        params["query.serviceName"] = service
    if operation:
        params["query.operationName"] = operation
    if attributes:
        # Jaeger reads a JSON object of strings (json.Unmarshal into map[string]string).
        params["query.attributes"] = json.dumps(dict(attributes), separators=(",", ":"))
    return params


@dataclass(frozen=True)
class TraceSummary:
    """One entry of `GET /api/v3/trace-summaries`: a trace described without its spans."""

    trace_id: str
    root_service: str
    root_operation: str
    start_ns: int
    end_ns: int
    span_count: int
    error_span_count: int
    orphan_span_count: int
    services: dict[str, tuple[int, int]]  # service -> (span count, error span count)

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> TraceSummary:
        # proto3 JSON omits zero counts and writes the fixed64 times as decimal strings.
        return cls(
            trace_id=id_from_json(item.get("traceId")),
            root_service=item.get("rootServiceName", ""),
            root_operation=item.get("rootOperationName", ""),
            start_ns=int(item.get("minStartTimeUnixNano", 0)),
            end_ns=int(item.get("maxEndTimeUnixNano", 0)),
            span_count=int(item.get("spanCount", 0)),
            error_span_count=int(item.get("errorSpanCount", 0)),
            orphan_span_count=int(item.get("orphanSpanCount", 0)),
            services={
                service.get("name", ""): (
                    int(service.get("spanCount", 0)),
                    int(service.get("errorSpanCount", 0)),
                )
                for service in item.get("services") or []
            },
        )


def _describe_timeout(
    trace_id: str, timeout: float, spans: list[Span] | None, error: Exception | None
) -> str:
    lines = [f"trace {trace_id}: condition not met after {timeout:g} s"]
    if error is not None:
        lines.append(f"last error: {error}")
    if not spans:
        lines.append("the backend returned no spans for this trace")
    else:
        lines.append(f"last seen {len(spans)} span(s):")
        lines.append(render_text(build_tree(spans), mark_errors=True))
    return "\n".join(lines)


def format_rfc3339(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z` suffix; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
