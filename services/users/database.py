"""users' connection to Redis, its database, and what a caller sees while Redis is away.

Two states of a Redis restart reach a request: the server is gone (`ConnectionError`: refused, reset, or a
pooled connection that died with the old server) and the server is back but still replaying its
append-only file (`BusyLoadingError`, "LOADING … loading the dataset in memory"). Loading a small file
takes milliseconds to a second, so `with_retry` runs a store operation again with a short, doubling delay
for at most `RETRY_BUDGET_S` (each retry is an event on the operation's span). After that the caller gets
a 503 JSON `database_unavailable` with the trace id and `Retry-After`, never a 500, and the server span
records the exception, so the trace says which state it was.

redis-py's own retry is switched off: it retries both the command and each reconnect (10 times each by
default), and the two multiply — one request waited 4.4 s through a 5 s load in a first measurement.

Running an operation again after a ConnectionError can repeat a command whose reply was lost: users'
operations allow it (an extra `INCR` of the id counter only skips an id; `HSET` writes the same fields; the
create-once script of an Idempotency-Key finds the user its first run created).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis
from flask import Flask, Response
from loguru import logger
from opentelemetry import trace
from redis.backoff import NoBackoff
from redis.retry import Retry

from services.web.http_errors import error_response

T = TypeVar("T")

# Retries stop once the next wait would pass this budget: 20, 40, 80, 160, 250, 250 ms (0.8 s) fit.
RETRY_BUDGET_S = 1.0
RETRY_BASE_S = 0.02
RETRY_CAP_S = 0.25
# Per attempt: a local Redis answers in a millisecond; these only bound a hung connection.
SOCKET_TIMEOUT_S = 1.0
RETRY_AFTER_S = 1
RETRIED = (redis.ConnectionError, redis.TimeoutError)  # BusyLoadingError is a ConnectionError


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
        health_check_interval=30,
        retry=Retry(NoBackoff(), 0),
    )


def with_retry(operation: Callable[[], T]) -> T:
    """`operation()`, retried through a short Redis restart or load; the last error is raised."""
    deadline = time.monotonic() + RETRY_BUDGET_S
    delay = RETRY_BASE_S
    attempt = 1
    while True:
        try:
            return operation()
        except RETRIED as exc:
            if time.monotonic() + delay > deadline:
                raise
            trace.get_current_span().add_event(
                "database retry", {"error.type": type(exc).__name__, "retry.attempt": attempt}
            )
            time.sleep(delay)
            delay = min(RETRY_CAP_S, delay * 2)
            attempt += 1


def register_database_errors(app: Flask) -> None:
    """Redis errors that outlived the retries become a 503 the caller can act on."""

    @app.errorhandler(redis.RedisError)
    def _database_unavailable(exc: redis.RedisError) -> tuple[Response, int]:
        loading = isinstance(exc, redis.BusyLoadingError)
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_attribute("db.unavailable_reason", "loading" if loading else type(exc).__name__)
        logger.warning("database unavailable", error_type=type(exc).__name__)
        message = (
            "the database is loading its data, retry shortly" if loading else "the database is unreachable"
        )
        response, status = error_response(503, "database_unavailable", message)
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return response, status
