"""users during a Redis restart: a 503 with the trace id while Redis is away, a short retry while it loads.

A real valkey-server with an append-only file is stopped and started again under the users app (in
process, its real Redis client). `key-load-delay` makes the server stay in its "loading the dataset" state
for a set time after the restart, so both the short and the long case are deterministic.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from opentelemetry import trace

from services.users import create_app, database
from tests.valkey_process import AofValkey

TOKEN = {"X-Service-Token": "test-token"}
ADA = {"name": "Ada", "email": "ada@example.org"}
# 40 keys at 20 ms each: about 0.8 s of loading, of which ~0.4 s are left once the server answers at all:
# less than the retries wait (0.8 s).
SHORT_LOAD = (40, 20_000)
# 100 keys at 50 ms each: about 5 s of loading, far more than the retries wait (0.8 s at most).
LONG_LOAD = (100, 50_000)


@pytest.fixture
def valkey(tmp_path) -> Iterator[AofValkey]:
    server = AofValkey(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def users(valkey):
    app = create_app({"TESTING": True, "REDIS_URL": valkey.url, "SERVICE_TOKEN": "test-token"})
    return app.test_client()


def assert_database_unavailable(response) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "database_unavailable"
    assert len(body["trace_id"]) == 32 and body["trace_id"] != "0" * 32
    assert response.headers["Retry-After"] == "1"


def test_redis_down_is_a_503_with_the_trace_id_and_the_data_survives_the_restart(users, valkey, spans):
    user = users.post("/users", json=ADA, headers=TOKEN).get_json()
    valkey.stop()
    assert_database_unavailable(users.post("/users", json=ADA, headers=TOKEN))
    assert_database_unavailable(users.get(f"/users/{user['id']}", headers=TOKEN))
    # The SERVER span says why: the exception is recorded, the status is an error.
    server = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"][-1]
    assert server.status.status_code.name == "ERROR"
    assert server.attributes["db.unavailable_reason"] == "ConnectionError"
    assert any(e.name == "exception" for e in server.events)
    valkey.start()
    # The same client (its pooled connections died with the old server) works again at once.
    assert users.get(f"/users/{user['id']}", headers=TOKEN).get_json() == user
    assert users.post("/users", json=ADA, headers=TOKEN).status_code == 201


def test_a_short_load_after_a_restart_is_ridden_out_by_the_retry(users, valkey):
    valkey.fill(SHORT_LOAD[0])
    users.post("/users", json=ADA, headers=TOKEN)  # a pooled connection to the old server
    valkey.restart(load_delay_us=SHORT_LOAD[1])
    assert valkey.loading()  # the request below starts while Redis answers LOADING
    response = users.post("/users", json=ADA, headers=TOKEN)
    assert response.status_code == 201, response.get_data(as_text=True)


def test_a_long_load_is_a_503_within_the_retry_budget_then_201(users, valkey, spans):
    valkey.fill(LONG_LOAD[0])
    valkey.restart(load_delay_us=LONG_LOAD[1])
    assert valkey.loading()
    started = time.monotonic()
    response = users.post("/users", json=ADA, headers=TOKEN)
    waited = time.monotonic() - started
    assert_database_unavailable(response)
    assert "loading" in response.get_json()["message"]
    server = [s for s in spans.get_finished_spans() if s.kind.name == "SERVER"][-1]
    assert server.attributes["db.unavailable_reason"] == "loading"
    # Bounded: the retries gave up long before loading ended (budget + one attempt's socket timeout).
    assert waited < database.RETRY_BUDGET_S + database.SOCKET_TIMEOUT_S + 0.5
    deadline = time.monotonic() + 30
    while valkey.loading() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert users.post("/users", json=ADA, headers=TOKEN).status_code == 201


def test_the_retry_is_bounded_by_its_budget_and_recorded_on_the_span(spans):
    # A port nothing listens on: every attempt is refused at once, so only the budget stops the retries.
    from tests.conftest import free_port

    client = database.redis_client(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError), trace.get_tracer("test").start_as_current_span("op"):
        database.with_retry(client.ping)
    waited = time.monotonic() - started
    assert database.RETRY_BUDGET_S / 2 < waited < database.RETRY_BUDGET_S + 0.5
    (op,) = [s for s in spans.get_finished_spans() if s.name == "op"]
    retries = [e.attributes["retry.attempt"] for e in op.events if e.name == "database retry"]
    assert retries == [1, 2, 3, 4, 5, 6]
