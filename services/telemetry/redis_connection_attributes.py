"""The Redis instrumentation's connection attributes, built once per connection pool instead of per command.

Why this module exists: for every command the stock Redis instrumentation (opentelemetry-instrumentation-
redis 0.66b1) calls `_set_connection_attributes`, which builds a fresh dict from the client's connection
pool settings (`db.system.name`, `db.namespace`, `server.address`, `server.port`, `network.transport`, or
their old names, per semantic-convention mode) through half a dozen mode-checking helpers, and then sets
each on the span. What it reads (the pool's db, host, port, unix path) does not change between commands.
No instrumentor option or hook avoids it (a request hook runs in addition, not instead), so the Redis
instrumentation's module global `_set_connection_attributes`, which its command and pipeline wrappers
look up on every call, is pointed at `set_connection_attributes` below: it computes the attributes
with the instrumentation's own `_extract_conn_attributes`, keeps them on the pool with the four
settings they came from, and sets the same attributes in the same order on each span, building them again
whenever one of those settings differs.

The internals are not an API: `install()` refuses to run (RuntimeError, at start-up) unless the installed
instrumentation is exactly the version this was checked against (requirements.lock), and
tests/unit/test_redis_connection_attributes_differential.py sends the same commands and pipelines through
the stock instrumentation and through this, on a real Redis-protocol server, and requires identical spans.
Only tracehop's setup installs it (services/users/app.py, TRACEHOP_LEAN_INSTRUMENTATION); `stock` stays
OpenTelemetry's own.
"""

from __future__ import annotations

import contextlib
from typing import Any

import opentelemetry.instrumentation.redis as otel_redis
from opentelemetry.instrumentation.redis import util as otel_redis_util

from services.telemetry.checked_versions import require_checked_versions

CHECKED_VERSIONS = {"opentelemetry-instrumentation-redis": "0.66b1"}

# On the connection pool: (settings read, semantic-convention modes, attribute items).
CACHE_ATTRIBUTE = "_tracehop_otel_connection_attributes"

_MISSING = object()


def check_versions() -> None:
    """Fail loudly when an installed instrumentation is not the version this module was checked against."""
    require_checked_versions("services/telemetry/redis_connection_attributes.py", CHECKED_VERSIONS)


def set_connection_attributes(
    span: Any, conn: Any, db_sem_conv_opt_in_mode: Any, http_sem_conv_opt_in_mode: Any
) -> None:
    """The stock `_set_connection_attributes`, with the attributes kept per pool."""
    if (
        not span.is_recording()
        or not hasattr(conn, "connection_pool")
        or not hasattr(conn.connection_pool, "connection_kwargs")
    ):
        return
    pool = conn.connection_pool
    kwargs = pool.connection_kwargs
    # Everything _extract_conn_attributes reads from the settings.
    read = (
        kwargs.get("db"),
        kwargs.get("path", _MISSING),
        kwargs.get("host", "localhost"),
        kwargs.get("port", 6379),
    )
    modes = (db_sem_conv_opt_in_mode, http_sem_conv_opt_in_mode)
    cached = getattr(pool, CACHE_ATTRIBUTE, None)
    if cached is None or cached[0] != read or cached[1] != modes:
        attributes = otel_redis_util._extract_conn_attributes(
            kwargs, db_sem_conv_opt_in_mode, http_sem_conv_opt_in_mode
        )
        cached = (read, modes, tuple(attributes.items()))
        # A pool class with __slots__ keeps nothing: the attributes are built each time, as stock.
        with contextlib.suppress(AttributeError):
            setattr(pool, CACHE_ATTRIBUTE, cached)
    for key, value in cached[2]:
        span.set_attribute(key, value)


def install() -> None:
    """Point the Redis instrumentation's wrappers at the per-pool attributes."""
    check_versions()
    if otel_redis._set_connection_attributes not in (
        otel_redis_util._set_connection_attributes,
        set_connection_attributes,
    ):
        raise RuntimeError("the Redis instrumentation no longer calls util._set_connection_attributes")
    otel_redis._set_connection_attributes = set_connection_attributes


def uninstall() -> None:
    """The instrumentation's own function again (tests compare both in one process)."""
    otel_redis._set_connection_attributes = otel_redis_util._set_connection_attributes
