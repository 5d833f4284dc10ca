"""Idempotency-Key on POST /api/users: the gateway in-process, users over real HTTP, a real Redis.

The crash between the two steps (user created, job not queued) is made for real in
tests/integration/test_idempotency_crash.py; here the state it leaves is built step by step.
"""

from __future__ import annotations

import json
import uuid

import pytest
import redis

from services.clients.users_client import UsersClient
from services.gateway.idempotency import IdempotencyStore, fingerprint
from services.users.store import IDEMPOTENCY_PREFIX

ADA = {"name": "Ada", "email": "ada@example.org"}


def queued(broker: redis.Redis) -> list[dict]:
    return [json.loads(raw)["headers"] for raw in broker.lrange("celery", 0, -1)]


def user_count(broker: redis.Redis) -> int:
    return int(broker.get("users:next_id") or 0)


def test_a_retry_with_the_same_key_returns_the_same_user_and_job_and_queues_nothing_more(client, broker):
    key = str(uuid.uuid4())
    first = client.post("/api/users", json=ADA, headers={"Idempotency-Key": key})
    users_before = user_count(broker)
    second = client.post("/api/users", json=ADA, headers={"Idempotency-Key": key})
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.get_json()["user"] == first.get_json()["user"]
    assert second.get_json()["job_id"] == first.get_json()["job_id"]
    assert "Idempotent-Replayed" not in first.headers and second.headers["Idempotent-Replayed"] == "true"
    assert user_count(broker) == users_before  # no second user
    assert [h["id"] for h in queued(broker)] == [first.get_json()["job_id"]]  # one job message
    # Each attempt is its own trace; the retry's trace says it was one.
    assert second.get_json()["trace_id"] != first.get_json()["trace_id"]


def test_different_keys_create_different_users(client, broker):
    a = client.post("/api/users", json=ADA, headers={"Idempotency-Key": "k-" + uuid.uuid4().hex})
    b = client.post("/api/users", json=ADA, headers={"Idempotency-Key": "k-" + uuid.uuid4().hex})
    assert a.get_json()["user"]["id"] != b.get_json()["user"]["id"]
    assert a.get_json()["job_id"] != b.get_json()["job_id"]


def test_without_a_key_every_post_creates(client, broker):
    a, b = (client.post("/api/users", json=ADA) for _ in range(2))
    assert a.get_json()["user"]["id"] != b.get_json()["user"]["id"]


def test_the_same_key_with_another_body_is_422(client, broker):
    key = str(uuid.uuid4())
    client.post("/api/users", json=ADA, headers={"Idempotency-Key": key})
    users_before, queued_before = user_count(broker), len(queued(broker))
    other = client.post("/api/users", json={**ADA, "name": "Grace"}, headers={"Idempotency-Key": key})
    assert other.status_code == 422
    body = other.get_json()
    assert body["error"] == "idempotency_key_reused" and len(body["trace_id"]) == 32
    assert (user_count(broker), len(queued(broker))) == (users_before, queued_before)


@pytest.mark.parametrize("key", ["", " ", "has space", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_400(client, broker, key):
    response = client.post("/api/users", json=ADA, headers={"Idempotency-Key": key})
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_idempotency_key"
    assert queued(broker) == []


def test_a_retry_after_the_first_attempt_died_before_queueing_queues_the_job_once(
    client, broker, users_server
):
    # The state a gateway killed between the two steps leaves: its record (job id chosen, not queued)
    # and the user users created for the key — but no job message.
    key = str(uuid.uuid4())
    store = IdempotencyStore(broker)
    reservation = store.reserve(key, fingerprint(ADA["name"], ADA["email"]))
    created = UsersClient(users_server, token="test-token").create_user(**ADA, idempotency_key=key)
    assert queued(broker) == []
    users_before = user_count(broker)

    retry = client.post("/api/users", json=ADA, headers={"Idempotency-Key": key})
    assert retry.status_code == 201
    assert retry.get_json()["user"] == created
    assert retry.get_json()["job_id"] == reservation.job_id
    assert [h["id"] for h in queued(broker)] == [reservation.job_id]
    assert user_count(broker) == users_before
    # Once queued, further retries queue nothing more.
    client.post("/api/users", json=ADA, headers={"Idempotency-Key": key})
    assert len(queued(broker)) == 1


def test_users_creates_at_most_one_user_per_key(users_client, valkey_url):
    headers = {"X-Service-Token": "test-token", "Idempotency-Key": "users-" + uuid.uuid4().hex}
    first = users_client.post("/users", json=ADA, headers=headers)
    again = users_client.post("/users", json=ADA, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.get_json() == first.get_json() and again.headers["Idempotent-Replayed"] == "true"
    other = users_client.post("/users", json={**ADA, "email": "grace@example.org"}, headers=headers)
    assert other.status_code == 422 and other.get_json()["error"] == "idempotency_key_reused"
    stored = redis.Redis.from_url(valkey_url).get(IDEMPOTENCY_PREFIX + headers["Idempotency-Key"])
    assert int(stored) == first.get_json()["id"]
