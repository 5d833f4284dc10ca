"""The users and gateway apps as gunicorn serves them, plus one path that tells the served worker's heap.

For tests/integration/test_worker_heap.py only: `GET /_heap` answers, from inside the worker that served
it, how many objects gc.freeze() moved to the permanent generation and how many a full collection would
walk now. Every other request goes to the real app untouched.
"""

from __future__ import annotations

import gc
import json

from services import gateway, users


def _with_heap_path(app):
    def serve(environ, start_response):
        if environ.get("PATH_INFO") != "/_heap":
            return app(environ, start_response)
        heap = {
            "frozen": gc.get_freeze_count(),
            "walked": len(gc.get_objects()),
            "threshold": gc.get_threshold(),
        }
        body = json.dumps(heap).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    return serve


def users_app():
    return _with_heap_path(users.create_app())


def gateway_app():
    return _with_heap_path(gateway.create_app())
