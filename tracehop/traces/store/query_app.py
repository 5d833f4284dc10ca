"""The query port as one WSGI app: Jaeger's query API v3 under /api/ and the trace viewer beside it.

Everything under /api/ is `answer_query`'s (api.py: Jaeger 2.20's routes and answers, including its
plain-text 404 for a path no route matches), answered without Flask; everything else on the port is the
viewer's Flask app (tracehop/traces/viewer), built when it is first needed (`warm_up`, or its first
request). Importing Flask, Jinja and the viewer costs a cold process about 0.35 s of CPU (0.9 s on a
loaded machine): a store restarted after a crash answers its API (and the stack's readiness probe)
without spending that first. A threaded WSGI server runs it (werkzeug's, which Flask brings): one thread
per connection, HTTP/1.1 keep-alive, no request log lines.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from tracehop.traces.store.api import answer_query, error_answer
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.viewer.security import SECURITY_HEADERS

API_PREFIX = "/api/"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class QueryPort:
    """The query port's WSGI app: /api/ answered here, the rest by the viewer's app."""

    def __init__(
        self, database: SpanDatabase, log_dir: Path | None = None, prometheus_url: str | None = None
    ) -> None:
        self.database = database
        self._viewer_sources = (database, log_dir, prometheus_url)
        self._viewer: WSGIApp | None = None
        self._viewer_lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        if not request.path.startswith(API_PREFIX):
            return self.viewer()(environ, start_response)
        return self._api_response(request)(environ, start_response)

    def _api_response(self, request: Request) -> Response:
        # answer_query does its own routing (and 404s), as Jaeger's router does. It gets the path still
        # percent-encoded (werkzeug's server keeps it in RAW_URI): an encoded "/" inside a base64 trace id
        # must not split the path.
        raw_path = request.environ.get("RAW_URI", "").partition("?")[0] or request.path
        try:
            answer = answer_query(
                self.database, request.method, raw_path, request.query_string.decode("latin-1")
            )
        except Exception as error:  # a bug answers 500 with a message, never a traceback
            sys.stderr.write(f"trace store: {request.method} {request.path} failed: {error!r}\n")
            answer = error_answer(500, f"internal error: {error}")
        response = Response(
            answer.body, status=answer.status, content_type=answer.content_type, headers=answer.headers
        )
        response.headers.update(SECURITY_HEADERS)
        return response

    def viewer(self) -> WSGIApp:
        """The viewer's Flask app, built (and Flask imported) on the first call."""
        with self._viewer_lock:
            if self._viewer is None:
                from tracehop.traces.viewer.app import create_viewer_app

                self._viewer = create_viewer_app(*self._viewer_sources)
            return self._viewer

    def warm_up(self) -> None:
        """Build the viewer now, so that its first page is not the one that waits for it."""
        self.viewer()


def create_query_app(
    database: SpanDatabase, log_dir: Path | None = None, prometheus_url: str | None = None
) -> QueryPort:
    return QueryPort(database, log_dir, prometheus_url)


class _QuietHandler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # as the OTLP port's handler (server.py): no delayed-ACK wait per answer

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request would drown the stack's logs

    def log_error(self, format: str, *args: object) -> None:
        pass


def make_query_server(host: str, port: int, app: WSGIApp) -> BaseWSGIServer:
    """A threaded WSGI server for `app` (port 0: a free port); serve_forever() / shutdown() as usual."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    server.daemon_threads = True
    return server
