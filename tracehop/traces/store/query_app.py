"""The query port as one Flask app: Jaeger's query API v3 under /api/v3 and the trace viewer beside it.

Everything under /api/ is `answer_query`'s (api.py: Jaeger 2.20's routes and answers, including its
plain-text 404 for a path no route matches); everything else on the port is the viewer
(tracehop/traces/viewer). A threaded WSGI server runs it
(werkzeug's, which Flask brings): one thread per connection, HTTP/1.1 keep-alive, no request log lines.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from tracehop.traces.store.api import answer_query, error_answer
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.viewer.app import EXTENSION, ViewerSources, blueprint

_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def create_query_app(
    database: SpanDatabase, log_dir: Path | None = None, prometheus_url: str | None = None
) -> Flask:
    app = Flask(__name__, static_folder=None)  # the viewer blueprint serves /static
    app.extensions[EXTENSION] = ViewerSources(database, log_dir, prometheus_url)

    # One rule for the whole API path space and every method: answer_query does its own routing (and
    # 404s), as Jaeger's router does. It gets the path still percent-encoded (werkzeug's server keeps it
    # in RAW_URI): an encoded "/" inside a base64 trace id must not split the path.
    @app.route("/api/", defaults={"rest": ""}, methods=_ALL_METHODS)
    @app.route("/api/<path:rest>", methods=_ALL_METHODS)
    def query_api(rest: str) -> Response:
        raw_path = request.environ.get("RAW_URI", "").partition("?")[0] or request.path
        answer = answer_query(database, request.method, raw_path, request.query_string.decode("latin-1"))
        return Response(
            answer.body, status=answer.status, content_type=answer.content_type, headers=answer.headers
        )

    @app.errorhandler(500)
    def internal_error(error: Exception) -> Response:
        # A bug answers 500 with a message, never a traceback page.
        sys.stderr.write(f"trace store: {request.method} {request.path} failed: {error!r}\n")
        if not request.path.startswith("/api/"):
            return Response(
                f"internal error: {error}\n", status=500, content_type="text/plain; charset=utf-8"
            )
        answer = error_answer(500, f"internal error: {error}")
        return Response(answer.body, status=500, content_type=answer.content_type, headers=answer.headers)

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
