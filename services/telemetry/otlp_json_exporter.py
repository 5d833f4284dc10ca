"""A fast OTLP/HTTP span exporter that sends OTLP/JSON (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json`).

Why it exists: the SDK's OTLP/HTTP exporter builds one protobuf message object per span, attribute and
value in pure Python before serialising them: about 40–50 µs per span of the services, the largest single
share of what tracing cost in `make bench`'s profile. Writing the same request as OTLP/JSON text
(otlp_json_encoder.py) costs a fraction of that (`make export-cost`, docs/performance.md).

What stays the SDK's: this class IS the SDK's `OTLPSpanExporter` with only the encoding replaced, so the
endpoint (`OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT`), timeout, headers, compression (gzip/deflate), TLS
settings, retries with backoff, the size limit and the SDK's exporter metrics are the SDK's own code.
tests/unit/test_otlp_json_exporter.py checks the HTTP behaviour.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.http._common import (
    RequestPayloadTooLargeError,
    _is_request_too_large,
    _resolve_endpoint,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import DEFAULT_TRACES_EXPORT_PATH, OTLPSpanExporter
from opentelemetry.sdk.environment_variables import OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE

from services.telemetry.otlp_http_transport import exporter_transport
from services.telemetry.otlp_json_encoder import encode_spans_json

_logger = logging.getLogger(__name__)

JSON_CONTENT_TYPE = "application/json"

# Encoding a batch is pure Python: the export thread holds the interpreter lock throughout, and a request
# thread that wants it waits up to the switch interval (5 ms) each time; under gevent (the gateway) the
# export greenlet blocks every request until it yields. So the encoder pauses every 32 spans (about
# 0.2-0.3 ms of work) and lets them run: docs/performance.md ("Export, measured in one process").
PAUSE_EVERY_SPANS = 32


def let_requests_run() -> None:
    sleep = time.sleep  # looked up at each call: gevent's monkey patches replace it after our import
    if type(sleep) is _BUILTIN:
        # Threads: sched_yield releases the interpreter lock around the system call, and a thread
        # waiting for it can take it then (tests/unit/test_export_pauses.py). time.sleep(0) would do
        # the same at 17 µs of CPU per call on this machine; sched_yield took 0.3.
        os.sched_yield()
    else:
        sleep(0)  # gevent (or eventlet): yield to the hub, which runs the ready request greenlets


_BUILTIN = type(len)


# -------------------------------------------------------------------------------------------- exporter


class OTLPJsonSpanExporter(OTLPSpanExporter):
    """The SDK's OTLP/HTTP span exporter, sending OTLP/JSON encoded by `encode_spans_json`.

    Takes the same arguments (all but the endpoint by keyword) and reads the same environment variables
    as `OTLPSpanExporter`. Posts through urllib3 rather than requests where that changes nothing else
    (otlp_http_transport.py).
    """

    def __init__(
        self,
        endpoint: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        session: Any = None,
        **kwargs: Any,
    ) -> None:
        endpoint = endpoint or _resolve_endpoint(
            OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, DEFAULT_TRACES_EXPORT_PATH
        )
        if session is None and "_transport" not in kwargs:
            transport = exporter_transport(endpoint)
            if transport is not None:
                kwargs["_transport"] = transport  # the SDK exporter's own parameter for another client
        # Headers passed here override OTEL_EXPORTER_OTLP_*_HEADERS and the SDK's protobuf Content-Type.
        headers = {**(headers or {}), "Content-Type": JSON_CONTENT_TYPE}
        super().__init__(endpoint, headers=headers, session=session, **kwargs)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The SDK's export() step by step (same logging, size check and metrics), with our encoder.
        if self._shutdown:
            _logger.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                body = encode_spans_json(spans, pause=let_requests_run, pause_every=PAUSE_EVERY_SPANS)
            except Exception as error:  # the SDK also turns any encoding error into FAILURE
                _logger.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if _is_request_too_large(body, self._max_request_size):
                _logger.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(body),
                    self._max_request_size,
                )
                result.error = RequestPayloadTooLargeError(
                    f"Serialized span request size {len(body)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes."
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(body)
            if not sent.success:
                result.error = sent.error
                result.error_attrs = (
                    {HTTP_RESPONSE_STATUS_CODE: sent.status_code} if sent.status_code is not None else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
