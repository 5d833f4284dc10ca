"""OTLP/HTTP request decoding: protobuf or JSON bodies, optionally compressed, with checked ids.

The receiving half of the trace store (server.py serves it; database.py stores what it returns).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

from tracehop.traces.store import ingest_batch, otlp_json_fast
from tracehop.traces.store.ingest_batch import ResourceGroup

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
TRACES_PATH = "/v1/traces"
# An SDK configured for every signal also posts metrics and logs: accept and drop them quietly.
DROPPED_SIGNAL_PATHS = frozenset({"/v1/metrics", "/v1/logs"})
MAX_BODY_BYTES = 64 * 1024 * 1024
Decoded = TypeVar("Decoded")


class BadRequest(ValueError):
    """The request cannot be served as sent; the message says why (becomes a 4xx body)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def decode_export_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    """Decode an OTLP/HTTP trace export body (protobuf or OTLP/JSON) and check its ids."""
    if content_type == PROTOBUF:
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except DecodeError as error:
            raise BadRequest(f"body is not a protobuf ExportTraceServiceRequest: {error}") from None
    elif content_type == JSON:
        request = parse_otlp_json(body)
    else:
        raise BadRequest(
            f"unsupported Content-Type {content_type!r}: use {PROTOBUF} or {JSON}",
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
        )
    check_ids(request)
    return request


def decode_export_batch(body: bytes, content_type: str) -> list[ResourceGroup]:
    """What the store keeps of an export body (ingest_batch.py): OTLP/JSON as exporters write it straight
    from the JSON (otlp_json_fast.decode_batch), anything else through `decode_export_request`."""
    if content_type == JSON:
        groups = _fast_json(body, otlp_json_fast.decode_batch)
        if groups is not None:
            return groups
        request = _parse_general_json(body)
        check_ids(request)
    else:
        request = decode_export_request(body, content_type)
    return ingest_batch.from_request(request)


def parse_otlp_json(body: bytes) -> ExportTraceServiceRequest:
    """Decode OTLP/JSON.

    It differs from the proto3 JSON mapping that `json_format` implements in one way that matters: trace
    and span ids are hex, not base64. So ids are rewritten to base64 before `ParseDict`, which already
    accepts the rest (enums as names or integers, 64-bit integers as strings or numbers). Unknown fields
    are ignored, as the OTLP specification requires of receivers.
    """
    # What exporters send: parsed by orjson and decoded five times faster than by json_format
    # (otlp_json_fast.py), together a third of the CPU of json.loads and the fast decoder.
    fast = _fast_json(body, otlp_json_fast.decode)
    return fast if fast is not None else _parse_general_json(body)


def _parse_general_json(body: bytes) -> ExportTraceServiceRequest:
    """Anything the fast path declines, exactly as before orjson: json.loads, then json_format."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BadRequest(f"body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise BadRequest("OTLP/JSON body must be an object with a resourceSpans list")
    return parse_otlp_json_document(document)


def _fast_json(body: bytes, decode: Callable[[Any], Decoded]) -> Decoded | None:
    """The body parsed by orjson and decoded by `decode` (one of otlp_json_fast's), or None when the
    general path must decide.

    orjson parses what `json.loads` parses, alike, but for a few forms: it refuses NaN and Infinity
    literals, lone surrogate escapes and UTF-16/32 bodies, and reads integers beyond 64 bits as floats.
    A refused body goes to `json.loads`; a float where the fast decoder wants an integer is NotCanonical;
    and every document the fast decoder declines is parsed again by `json.loads` for `json_format`, so the
    general path never sees what orjson made of it.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict:
        return None
    try:
        return decode(document)
    except otlp_json_fast.NotCanonical:
        return None


def parse_otlp_json_document(document: dict[str, Any]) -> ExportTraceServiceRequest:
    """The general decoder (json_format), for any document the fast one does not take."""
    for span in _json_spans(document):
        _hex_ids_to_base64(span)
        for link in _json_list(span, "links"):
            _hex_ids_to_base64(link)
    try:
        return json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, OverflowError) as error:
        # OverflowError: json_format converts an enum given as 1e400 or Infinity to int without checking.
        raise BadRequest(f"body is not an OTLP/JSON ExportTraceServiceRequest: {error}") from None


def _json_list(parent: Any, key: str) -> list[Any]:
    # Shape errors are left for ParseDict to report; here we only skip what is not a list of objects.
    value = parent.get(key) if isinstance(parent, dict) else None
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _json_spans(document: dict[str, Any]) -> Iterable[dict[str, Any]]:
    for resource_spans in _json_list(document, "resourceSpans"):
        for scope_spans in _json_list(resource_spans, "scopeSpans"):
            yield from _json_list(scope_spans, "spans")


_ID_FIELDS = {"traceId": "trace_id", "spanId": "span_id", "parentSpanId": "parent_span_id"}


def _hex_ids_to_base64(item: dict[str, Any]) -> None:
    for json_name, proto_name in _ID_FIELDS.items():
        for key in (json_name, proto_name):
            value = item.get(key)
            if value is None or value == "":
                continue
            if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-fA-F]{2})+", value):
                raise BadRequest(f"{json_name} must be a hex string in OTLP/JSON, got {value!r}")
            item[key] = _base64(bytes.fromhex(value))


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def check_ids(request: ExportTraceServiceRequest) -> None:
    """Reject spans whose ids cannot be stored or looked up (wrong length, all zero)."""
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _check_span_ids(span)


def _check_span_ids(span: SpanProto) -> None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        raise BadRequest(
            f"span {span.name!r}: trace id must be 16 bytes, not all zero ({span.trace_id.hex()!r})"
        )
    if len(span.span_id) != 8 or not any(span.span_id):
        raise BadRequest(
            f"span {span.name!r}: span id must be 8 bytes, not all zero ({span.span_id.hex()!r})"
        )
    if len(span.parent_span_id) not in (0, 8):
        raise BadRequest(f"span {span.name!r}: parent span id must be empty or 8 bytes")


def decompress(body: bytes, content_encoding: str) -> bytes:
    """Undo Content-Encoding (gzip, deflate or identity)."""
    encoding = content_encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            return body
        if encoding in ("gzip", "x-gzip"):
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, EOFError, zlib.error) as error:
        raise BadRequest(f"body is not valid {encoding}: {error}") from None
    raise BadRequest(f"unsupported Content-Encoding {content_encoding!r}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
