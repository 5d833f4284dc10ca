"""redis_connection_attributes.py gives exactly the spans the stock Redis instrumentation gives.

Two checks: the same commands, pipelines and failing commands through the instrumented redis-py client on
a real Redis-protocol server (the session's private valkey-server, a database of this test's own), with
the stock `_set_connection_attributes` and with ours, must export identical spans; and for random
sequences of pool settings (db, host, port, unix path, changed between calls) in every semantic-convention
mode combination, ours sets the same attributes, in the same order, as the stock function on a fresh span.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.instrumentation._semconv import _StabilityMode
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.redis import util as otel_redis_util
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.telemetry import redis_connection_attributes
from services.telemetry.setup import instrument
from tests.unit.test_flask_request_attributes_differential import shape


def commands(client: redis.Redis) -> None:
    client.set("user:1", "Ada")
    client.get("user:1")
    client.hset("h", mapping={"a": 1, "b": "two"})
    client.hgetall("h")
    client.incr("counter")
    with pytest.raises(redis.ResponseError):
        client.incr("user:1")  # not an integer: an error span with its exception event
    with client.pipeline() as pipe:
        pipe.set("p", 1).incr("p").get("p")
        pipe.execute()
    with client.pipeline(transaction=False) as pipe:
        pipe.get("user:1").exists("h")
        pipe.execute()
    client.delete("user:1", "h", "counter", "p")


def test_commands_on_a_real_server_give_the_stock_spans(valkey_url: str, spans: InMemorySpanExporter) -> None:
    instrument([RedisInstrumentor()])
    base = valkey_url.rsplit("/", 1)[0]
    clients = [
        redis.Redis.from_url(base + "/10"),  # db from the URL
        redis.Redis(host="127.0.0.1", port=int(base.rsplit(":", 1)[1]), db=11),
    ]
    runs = []
    try:
        for install in (redis_connection_attributes.uninstall, redis_connection_attributes.install):
            install()
            spans.clear()
            for client in clients:
                commands(client)
                commands(client)  # the second time from the pool's kept attributes
            runs.append(shape(spans.get_finished_spans()))
    finally:
        redis_connection_attributes.uninstall()
    assert len(runs[0]) == 2 * 2 * 9  # 9 spans per commands() call
    # Every span has its connection's attributes (the port under either convention's name).
    assert all({"server.port", "net.peer.port"} & {a[0] for a in span[4]} for span in runs[0])
    assert runs[0] == runs[1]


class Pool:
    def __init__(self) -> None:
        self.connection_kwargs: dict[str, Any] = {}


class Client:
    def __init__(self, pool: Pool) -> None:
        self.connection_pool = pool


settings_strategy = st.fixed_dictionaries(
    {},
    optional={
        "db": st.one_of(st.none(), st.integers(0, 15)),
        "host": st.sampled_from(["127.0.0.1", "redis", "::1"]),
        "port": st.integers(1, 65535),
        "path": st.sampled_from(["/tmp/redis.sock", ""]),
        "socket_timeout": st.floats(0.1, 5),
    },
)
modes = st.sampled_from(
    [
        _StabilityMode.DEFAULT,
        _StabilityMode.HTTP,
        _StabilityMode.HTTP_DUP,
        _StabilityMode.DATABASE,
        _StabilityMode.DATABASE_DUP,
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(settings_strategy, modes, modes, st.booleans()), min_size=1, max_size=6))
def test_attributes_equal_the_stock_function_as_settings_change(steps: list) -> None:
    tracer = TracerProvider().get_tracer("differential")
    pool = Pool()
    for kwargs, db_mode, http_mode, replace in steps:
        if replace:
            pool.connection_kwargs = dict(kwargs)  # a new settings dict
        else:
            pool.connection_kwargs.clear()
            pool.connection_kwargs.update(kwargs)  # the same dict, changed in place
        attributes = []
        for function in (
            otel_redis_util._set_connection_attributes,
            redis_connection_attributes.set_connection_attributes,
        ):
            span = tracer.start_span("GET")
            function(span, Client(pool), db_mode, http_mode)
            attributes.append([(k, type(v).__name__, v) for k, v in span.attributes.items()])
        assert attributes[0] == attributes[1]


def test_a_span_that_is_not_recording_gets_nothing() -> None:
    from opentelemetry.trace import INVALID_SPAN

    pool = Pool()
    redis_connection_attributes.set_connection_attributes(
        INVALID_SPAN, Client(pool), _StabilityMode.DEFAULT, _StabilityMode.DEFAULT
    )
    assert not hasattr(pool, redis_connection_attributes.CACHE_ATTRIBUTE)


def test_another_instrumentation_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        redis_connection_attributes.CHECKED_VERSIONS, "opentelemetry-instrumentation-redis", "0.1b0"
    )
    with pytest.raises(RuntimeError, match="0.1b0"):
        redis_connection_attributes.install()


def test_checked_versions_are_the_locked_ones() -> None:
    lock = (Path(__file__).parents[2] / "requirements.lock").read_text().splitlines()
    for name, checked in redis_connection_attributes.CHECKED_VERSIONS.items():
        assert f"{name}=={checked}" in lock
