"""The trace store's two HTTP servers (OTLP receiver, query API) and the process that runs them.

Run: `python -m tracehop trace-store --otlp-port 4318 --query-port 16686 --db var/traces.sqlite3`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from google.protobuf import json_format
from google.rpc import status_pb2  # OTLP/HTTP error bodies are google.rpc.Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from tracehop.traces.store.api import normalise_trace_id, parse_trace_search, query_param, resource_spans_json
from tracehop.traces.store.database import SpanDatabase, StoredSpan
from tracehop.traces.store.otlp import (
    DROPPED_SIGNAL_PATHS,
    JSON,
    MAX_BODY_BYTES,
    PROTOBUF,
    TRACES_PATH,
    BadRequest,
    decode_export_request,
    decompress,
)

SHUTDOWN_POLL_SECONDS = 0.05  # how quickly serve_forever notices a shutdown request


class _Handler(BaseHTTPRequestHandler):
    """Shared plumbing: HTTP/1.1 keep-alive (SDK exporters reuse connections), quiet logs."""

    protocol_version = "HTTP/1.1"
    server: _StoreServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would drown the stack's logs

    def send_body(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status: int, document: Any) -> None:
        self.send_body(status, json.dumps(document, separators=(",", ":")).encode(), JSON)

    def handle_one_request(self) -> None:
        # A bug must answer 500 with a message, not drop the connection and print a traceback per request.
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as error:  # last resort: answer 500
            request = f"{getattr(self, 'command', '?')} {getattr(self, 'path', '?')}"
            sys.stderr.write(f"trace store: {request} failed: {error!r}\n")
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.send_json(500, {"error": {"httpCode": 500, "message": f"internal error: {error}"}})


class OtlpHandler(_Handler):
    """`POST /v1/traces` with OTLP/HTTP protobuf or JSON, optionally gzip-compressed."""

    def do_POST(self) -> None:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            body = self._read_body()
        except BadRequest as error:
            self.close_connection = True
            self._send_status(error.status, str(error), content_type)
            return
        path = urlsplit(self.path).path.rstrip("/")
        if path in DROPPED_SIGNAL_PATHS:
            self._send_success(content_type)
        elif path != TRACES_PATH:
            self._send_status(
                HTTPStatus.NOT_FOUND, f"unknown path {path!r}: traces go to {TRACES_PATH}", content_type
            )
        else:
            self._export(body, content_type)

    def do_GET(self) -> None:
        status = (
            HTTPStatus.METHOD_NOT_ALLOWED if urlsplit(self.path).path == TRACES_PATH else HTTPStatus.NOT_FOUND
        )
        self._send_status(status, f"{self.command} {self.path}: the OTLP receiver only accepts POST", JSON)

    def _export(self, body: bytes, content_type: str) -> None:
        try:
            data = decompress(body, self.headers.get("Content-Encoding", ""))
            request = decode_export_request(data, content_type)
        except BadRequest as error:
            self._send_status(error.status, str(error), content_type)
            return
        self.server.database.insert(request)
        self._send_success(content_type)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise BadRequest("invalid Content-Length") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise BadRequest(f"body larger than {MAX_BODY_BYTES} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise BadRequest("malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                raise BadRequest(
                    f"body larger than {MAX_BODY_BYTES} bytes", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
                )
            chunks.append(self.rfile.read(size))
            self.rfile.readline(16)  # CRLF after the chunk

    def _send_success(self, content_type: str) -> None:
        if content_type == PROTOBUF:
            self.send_body(200, ExportTraceServiceResponse().SerializeToString(), PROTOBUF)
        else:
            self.send_json(200, {})

    def _send_status(self, status: int, message: str, content_type: str) -> None:
        """OTLP/HTTP error answer: a google.rpc.Status in the request's encoding."""
        error = status_pb2.Status(code=_GRPC_CODES.get(status, 3), message=message)
        if content_type == PROTOBUF:
            self.send_body(status, error.SerializeToString(), PROTOBUF)
        else:
            self.send_json(status, json_format.MessageToDict(error))


# HTTP status -> gRPC code of the Status body (INVALID_ARGUMENT, NOT_FOUND, UNIMPLEMENTED, ...).
_GRPC_CODES = {400: 3, 404: 5, 405: 12, 413: 3, 415: 3}


class QueryHandler(_Handler):
    """The Jaeger query API v3 subset: traces by id, search, services, operations."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/")
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            if path.startswith("/api/v3/traces/"):
                self._get_trace(unquote(path.removeprefix("/api/v3/traces/")))
            elif path == "/api/v3/traces":
                self._find_traces(query)
            elif path == "/api/v3/services":
                self.send_json(200, {"services": self.server.database.services()})
            elif path == "/api/v3/operations":
                self._get_operations(query)
            else:
                self._send_error(HTTPStatus.NOT_FOUND, f"unknown path {url.path!r}")
        except BadRequest as error:
            self._send_error(error.status, str(error))

    do_HEAD = do_GET

    def _get_trace(self, trace_id_text: str) -> None:
        trace_id = normalise_trace_id(trace_id_text)
        spans = self.server.database.trace(trace_id)
        if not spans:
            self._send_error(HTTPStatus.NOT_FOUND, f"trace not found: {trace_id}")
            return
        self._send_resource_spans([spans])

    def _find_traces(self, query: Mapping[str, list[str]]) -> None:
        search = parse_trace_search(query)
        database = self.server.database
        traces = database.traces(database.find_trace_ids(search))
        if not traces:
            self._send_error(HTTPStatus.NOT_FOUND, "No traces found")
            return
        self._send_resource_spans(list(traces.values()))

    def _get_operations(self, query: Mapping[str, list[str]]) -> None:
        service = query_param(query, "service")
        operations = self.server.database.operations(service, query_param(query, "span_kind", "spanKind"))
        self.send_json(200, {"operations": [{"name": name, "spanKind": kind} for name, kind in operations]})

    def _send_resource_spans(self, traces: list[list[StoredSpan]]) -> None:
        # Several traces come back as one flat list, each trace's resources in turn, as Jaeger does.
        resource_spans = [
            item for spans in traces for item in resource_spans_json(self.server.database, spans)
        ]
        self.send_json(200, {"result": {"resourceSpans": resource_spans}})

    def _send_error(self, status: int, message: str) -> None:
        self.send_json(status, {"error": {"httpCode": int(status), "message": message}})


class _StoreServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], database: SpanDatabase) -> None:
        super().__init__(address, handler)
        self.database = database


# -------------------------------------------------------------------------------------------- processes


class RunningTraceStore:
    """Both servers serving from background threads; `stop()` (or leaving the `with`) shuts them down."""

    def __init__(self, otlp_port: int, query_port: int, db_path: str | os.PathLike[str], host: str) -> None:
        self.db_path = db_path
        self.host = host
        self.database = SpanDatabase(db_path)
        self._servers: list[_StoreServer] = []
        try:
            for port, handler in ((otlp_port, OtlpHandler), (query_port, QueryHandler)):
                self._servers.append(_StoreServer((host, port), handler, self.database))
        except OSError:
            self._close()
            raise
        self._threads = [
            threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},
                name=f"trace-store-{server.server_port}",
                daemon=True,
            )
            for server in self._servers
        ]
        for thread in self._threads:
            thread.start()
        self._stopped = False

    @property
    def otlp_port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def query_port(self) -> int:
        return self._servers[1].server_address[1]

    @property
    def otlp_endpoint(self) -> str:
        """Base URL for OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://{self.host}:{self.otlp_port}"

    @property
    def traces_url(self) -> str:
        """Full URL for an OTLPSpanExporter(endpoint=...)."""
        return self.otlp_endpoint + TRACES_PATH

    @property
    def query_url(self) -> str:
        """Base URL for TraceQuery."""
        return f"http://{self.host}:{self.query_port}"

    def stop(self) -> None:
        """Stop serving, wait for the server threads and close the database (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        # In parallel: each shutdown waits up to one poll interval for its serve_forever loop.
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for thread in [*stoppers, *self._threads]:
            thread.join()
        self._close()

    def _close(self) -> None:
        for server in self._servers:
            server.server_close()
        self.database.close()

    def __enter__(self) -> RunningTraceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_in_thread(
    otlp_port: int = 0,
    query_port: int = 0,
    db_path: str | os.PathLike[str] = ":memory:",
    host: str = "127.0.0.1",
) -> RunningTraceStore:
    """Start the store in background threads (port 0 picks a free port); for tests and embedding."""
    return RunningTraceStore(otlp_port, query_port, db_path, host)


def run(otlp_port: int, query_port: int, db_path: str | os.PathLike[str], host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (blocking)."""
    stop_requested = threading.Event()
    store = serve_in_thread(otlp_port, query_port, db_path, host)
    previous = {
        sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    sys.stderr.write(
        f"trace store: OTLP/HTTP on {store.traces_url}, query API v3 on {store.query_url}/api/v3, "
        f"database {db_path}\n"
    )
    sys.stderr.flush()
    try:
        stop_requested.wait()
    finally:
        store.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
