"""The limits of the public door (the gateway's listening port) and what a client sees when it hits one.

Read once from the environment when gunicorn loads its configuration:

- `TRACEHOP_HEADER_TIMEOUT_S` (10): the request line and headers must be complete this long after their
  first byte (for a connection's first request: after it opened); else 408.
- `TRACEHOP_BODY_TIMEOUT_S` (10): the body (up to BUFFERED_BODY_BYTES) must be complete this long after
  the headers; else 408.
- `TRACEHOP_MAX_CONNECTIONS` (1000): open connections per gateway process; one more is answered 503.
- `GUNICORN_KEEPALIVE` (75): an idle keep-alive connection is closed (silently) after this long.

The answers are the API's usual JSON error with `trace_id: null`: no request was read, so no trace began.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from services.web import settings

# Bodies up to this size are read completely before the application runs (the gateway's own limit is
# 16 KiB, so the application still sees enough to answer its 413); a longer one is read lazily after it.
BUFFERED_BODY_BYTES = 64 * 1024
# Refusals are written to connections the server does not otherwise serve: beyond the limit, a few more
# are accepted only to be told 503; past that the kernel's listen queue holds them.
REFUSAL_HEADROOM = 64


@dataclass(frozen=True)
class DoorLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int

    @classmethod
    def from_env(cls) -> DoorLimits:
        limits = cls(
            header_timeout_s=settings.env_float("TRACEHOP_HEADER_TIMEOUT_S", 10.0),
            body_timeout_s=settings.env_float("TRACEHOP_BODY_TIMEOUT_S", 10.0),
            max_connections=settings.env_int("TRACEHOP_MAX_CONNECTIONS", 1000),
        )
        if limits.header_timeout_s <= 0 or limits.body_timeout_s <= 0 or limits.max_connections < 1:
            raise ValueError(f"the public door's limits must be positive: {limits}")
        return limits


_REASONS = {408: "Request Timeout", 503: "Service Unavailable"}


def json_error_response(status: int, error: str, message: str) -> bytes:
    """A complete HTTP/1.1 response that closes the connection, with the API's JSON error body."""
    body = json.dumps({"error": error, "message": message, "trace_id": None}).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    )
    if status == 503:
        head += "Retry-After: 1\r\n"
    return (head + "\r\n").encode() + body
