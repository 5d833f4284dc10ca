"""JSON errors, the same shape in every service: {"error": ..., "message": ..., "trace_id": ...}.

The trace id lets whoever receives an error find its trace (and its log lines) at once. Nothing else about
the failure leaves the process: no traceback, no exception text from a library.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify
from loguru import logger
from werkzeug.exceptions import HTTPException

from services.telemetry.setup import current_trace_id


class ApiError(Exception):
    """An error the API answers on purpose, with its status and a short machine-readable code."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


def error_response(status: int, error: str, message: str) -> tuple[Response, int]:
    return jsonify(error=error, message=message, trace_id=current_trace_id()), status


def _http_error_code(exc: HTTPException) -> str:
    # "Not Found" -> "not_found", "Request Entity Too Large" -> "request_entity_too_large"
    return (exc.name or "error").lower().replace(" ", "_")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.error, exc.message)

    @app.errorhandler(HTTPException)
    def _http_exception(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        response, status = error_response(status, _http_error_code(exc), exc.description or exc.name)
        # Keep werkzeug's own headers (a 405 MUST carry `Allow`, RFC 9110), but not its content type.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # The exception and its traceback go to the log line (with the trace id), never to the caller.
        logger.opt(exception=exc).error("unhandled error")
        return error_response(500, "internal_error", "the server failed to handle this request")
