"""The trace store's two HTTP servers (OTLP receiver; query API and viewer) and the process that runs them.

Run: `python -m tracehop trace-store --otlp-port 4318 --query-port 16686 --db var/traces.sqlite3`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.rpc import status_pb2  # OTLP/HTTP error bodies are google.rpc.Status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceResponse,
)

from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.otlp import (
    DROPPED_SIGNAL_PATHS,
    JSON,
    MAX_BODY_BYTES,
    PROTOBUF,
    TRACES_PATH,
    BadRequest,
    decode_export_batch,
    decompress,
)
from tracehop.traces.store.query_app import create_query_app, make_query_server
from tracehop.traces.store.retention import FIRST_PRUNE_DELAY_S, PRUNE_INTERVAL_S, Retention

SHUTDOWN_POLL_SECONDS = 0.05  # how quickly serve_forever notices a shutdown request


class _Handler(BaseHTTPRequestHandler):
    """Shared plumbing: HTTP/1.1 keep-alive (SDK exporters reuse connections), quiet logs."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out as two small writes; with Nagle's algorithm on, the body waits for the
    # client's delayed ACK of the headers: ~45 ms added to every export POST (and to freshness).
    disable_nagle_algorithm = True
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
        path = urlsplit(self.path).path
        if path == "/":
            # A person who opens the receiver's address learns what it is for (and where traces are shown).
            self.send_json(
                200, {"receiver": "OTLP/HTTP", "traces": f"POST {TRACES_PATH}", "accepts": [PROTOBUF, JSON]}
            )
            return
        status = HTTPStatus.METHOD_NOT_ALLOWED if path == TRACES_PATH else HTTPStatus.NOT_FOUND
        self._send_status(status, f"{self.command} {self.path}: the OTLP receiver only accepts POST", JSON)

    def _export(self, body: bytes, content_type: str) -> None:
        try:
            data = decompress(body, self.headers.get("Content-Encoding", ""))
            groups = decode_export_batch(data, content_type)
        except BadRequest as error:
            self._send_status(error.status, str(error), content_type)
            return
        self.server.database.insert_groups(groups)
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


class _StoreServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], database: SpanDatabase) -> None:
        super().__init__(address, handler)
        self.database = database


# -------------------------------------------------------------------------------------------- processes


class RunningTraceStore:
    """Both servers serving from background threads, and the housekeeping thread that applies the
    retention; `stop()` (or leaving the `with`) shuts them down.

    What a store restarted after a crash does first is answer: the query API reads on connections of its
    own (database.py), the viewer's Flask app is built and the first prune runs only FIRST_PRUNE_DELAY_S
    after the start, off the request threads, and the prune goes chunk by chunk.

    The query port serves the query API and the trace viewer (which shows log lines from `log_dir` and
    links to Prometheus at `prometheus_url` when given).

    `freeze_heap` (the store's own process, `run`): once the viewer is built, every object alive is moved
    out of the cyclic garbage collector's reach (`gc.freeze`). Decoding an OTLP/JSON export allocates ~25
    dicts and lists per span; they trigger collections that walked the ~300,000 objects of the imported
    modules (Flask, protobuf, ...) again and again: 10 µs of the store's CPU per span in a replay of the
    services' exports (docs/performance.md, "The trace store's CPU per span"). Objects made afterwards are
    collected as before. Not for a store embedded in another program (tests): that would pin its garbage.
    """

    def __init__(
        self,
        otlp_port: int,
        query_port: int,
        db_path: str | os.PathLike[str],
        host: str,
        log_dir: Path | None = None,
        prometheus_url: str | None = None,
        retention: Retention | None = None,
        freeze_heap: bool = False,
    ) -> None:
        self.db_path = db_path
        self._freeze_heap = freeze_heap
        self.host = host
        self.database = SpanDatabase(db_path)
        self.retention = retention or Retention()
        self._servers: list[Any] = []
        try:
            self._servers.append(_StoreServer((host, otlp_port), OtlpHandler, self.database))
            self._query_app = create_query_app(self.database, log_dir, prometheus_url)
            self._servers.append(make_query_server(host, query_port, self._query_app))
        except OSError:
            self._close()
            raise
        self._stop_pruning = threading.Event()
        self._pruner = threading.Thread(target=self._housekeeping, name="trace-store-pruner", daemon=True)
        self._pruner.start()
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
        self._stop_pruning.set()
        self._pruner.join()
        # In parallel: each shutdown waits up to one poll interval for its serve_forever loop.
        stoppers = [threading.Thread(target=server.shutdown) for server in self._servers]
        for stopper in stoppers:
            stopper.start()
        for thread in [*stoppers, *self._threads]:
            thread.join()
        self._close()

    def _housekeeping(self) -> None:
        if self._stop_pruning.wait(FIRST_PRUNE_DELAY_S):
            return
        try:
            self._query_app.warm_up()
        except Exception as error:  # the viewer's own first page will say it again; retention goes on
            sys.stderr.write(f"trace store: building the trace viewer failed: {error!r}\n")
        if self._freeze_heap:
            gc.freeze()
        while True:
            try:
                deleted = self.database.prune(self.retention, time.time_ns())
            except sqlite3.Error as error:  # a locked or closing database: try again next time
                sys.stderr.write(f"trace store: pruning failed: {error}\n")
                deleted = 0
            if deleted:
                sys.stderr.write(f"trace store: retention removed {deleted} spans\n")
            if self._stop_pruning.wait(PRUNE_INTERVAL_S):
                return

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
    log_dir: Path | None = None,
    prometheus_url: str | None = None,
    retention: Retention | None = None,
    freeze_heap: bool = False,
) -> RunningTraceStore:
    """Start the store in background threads (port 0 picks a free port); for tests and embedding."""
    return RunningTraceStore(
        otlp_port, query_port, db_path, host, log_dir, prometheus_url, retention, freeze_heap
    )


def run(
    otlp_port: int,
    query_port: int,
    db_path: str | os.PathLike[str],
    host: str = "127.0.0.1",
    log_dir: Path | None = None,
    prometheus_url: str | None = None,
    retention: Retention | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (blocking)."""
    stop_requested = threading.Event()
    store = serve_in_thread(
        otlp_port, query_port, db_path, host, log_dir, prometheus_url, retention, freeze_heap=True
    )
    previous = {
        sig: signal.signal(sig, lambda *_: stop_requested.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    sys.stderr.write(
        f"trace store: OTLP/HTTP on {store.traces_url}, trace viewer on {store.query_url}/ and query API v3"
        f" on {store.query_url}/api/v3, database {db_path}\n"
    )
    sys.stderr.flush()
    try:
        stop_requested.wait()
    finally:
        store.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
