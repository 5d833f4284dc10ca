"""The query port as one Flask app: Jaeger's query API v3 under /api/v3 and the trace viewer beside it.

The API's answers are `answer_query`'s, byte for byte what they were when a bare http.server served them;
everything else on the port is the viewer (tracehop/traces/viewer). A threaded WSGI server runs it
(werkzeug's, which Flask brings): one thread per connection, HTTP/1.1 keep-alive, no request log lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tracehop.traces.store.api import answer_query, encode_json
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.otlp import JSON
from tracehop.traces.viewer.app import EXTENSION, ViewerSources, blueprint


def create_query_app(
    database: SpanDatabase, log_dir: Path | None = None, prometheus_url: str | None = None
) -> Flask:
    app = Flask(__name__, static_folder=None)  # the viewer blueprint serves /static
    app.extensions[EXTENSION] = ViewerSources(database, log_dir, prometheus_url)

    # One rule for the whole API path space: answer_query does its own routing (and 404s), as Jaeger does.
    @app.route("/api/<path:rest>", methods=["GET"])
    def query_api(rest: str) -> Response:
        status, document = answer_query(database, request.path, request.query_string.decode("latin-1"))
        return Response(encode_json(document), status=status, content_type=JSON)

    @app.errorhandler(500)
    def internal_error(error: Exception) -> Response:
        # A bug answers 500 with a message, never a traceback page.
        sys.stderr.write(f"trace store: {request.method} {request.path} failed: {error!r}\n")
        body = {"error": {"httpCode": 500, "message": f"internal error: {error}"}}
        return Response(encode_json(body), status=500, content_type=JSON)

    app.register_blueprint(blueprint)
    return app


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request would drown the stack's logs

    def log_error(self, format: str, *args: object) -> None:
        pass


def make_query_server(host: str, port: int, app: Flask) -> BaseWSGIServer:
    """A threaded WSGI server for `app` (port 0: a free port); serve_forever() / shutdown() as usual."""
    server = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    server.daemon_threads = True
    return server
