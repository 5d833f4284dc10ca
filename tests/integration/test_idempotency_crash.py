"""A gateway process SIGKILLed between "users created the user" and "the welcome job was queued", then
the client's retry with the same Idempotency-Key, on a private stack (real gunicorn, worker, Redis).

The kill is deterministic: the request's baggage asks for `gateway:kill=user_created`, and the gateway
SIGKILLs itself at exactly that line (services/demo/fault_injection.py, on only with
TRACEHOP_FAULT_INJECTION=1). gunicorn's master then starts a new worker process, as after an OOM kill.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis
import requests
from celery import Celery

from tests.integration.stack import RunningStack, private_stack
from tracehop.traffic import fault_baggage

ENV = {
    "GUNICORN_WORKERS": "1",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_FAULT_INJECTION": "1",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("idempotency"), ENV) as running:
        yield running


def deliveries(stack: RunningStack, user_id: int) -> int:
    return len(
        [
            line
            for line in stack.log_lines("worker")
            if line.get("message") == "welcome e-mail delivered" and line.get("user_id") == user_id
        ]
    )


def wait_for_gateway(stack: RunningStack, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if stack.http.get(f"{stack.gateway}/healthz", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, "the gateway did not answer again"
        time.sleep(0.1)


def test_a_retry_after_the_gateway_died_between_the_steps_finishes_the_request_once(stack):
    store = redis.Redis.from_url(stack.stack.redis_url)
    key = str(uuid.uuid4())
    body = {"name": "Ada", "email": f"ada.{key[:8]}@example.org"}
    users_before = int(store.get("users:next_id") or 0)

    with pytest.raises(requests.ConnectionError):
        stack.http.post(
            f"{stack.gateway}/api/users",
            json=body,
            headers={"Idempotency-Key": key, "baggage": fault_baggage("gateway:kill=user_created")},
            timeout=10,
        )
    # Killed for real, by SIGKILL: gunicorn's master says so.
    assert stack.wait_for_log_lines("gateway", lambda line: "SIGKILL" in line.get("message", ""))
    # Half a request: users created the user, nothing was queued.
    assert int(store.get("users:next_id")) == users_before + 1
    user_id = users_before + 1
    assert store.llen("celery") == 0
    wait_for_gateway(stack)

    retry = stack.http.post(
        f"{stack.gateway}/api/users", json=body, headers={"Idempotency-Key": key}, timeout=10
    )
    assert retry.status_code == 201, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["user"]["id"] == user_id  # the user the dead attempt created, not a second one
    job_id = retry.json()["job_id"]
    assert stack.wait_for_job(job_id)["state"] == "SUCCESS"
    assert int(store.get("users:next_id")) == users_before + 1

    # Once more, and a stray second copy of the job's message: still one user, one e-mail.
    again = stack.http.post(
        f"{stack.gateway}/api/users", json=body, headers={"Idempotency-Key": key}, timeout=10
    )
    assert (again.json()["user"]["id"], again.json()["job_id"]) == (user_id, job_id)
    celery = Celery(broker=stack.stack.redis_url)
    try:
        celery.send_task("send_welcome_email", args=[user_id, "example.org"], task_id=job_id)
    finally:
        celery.close()
    skipped = stack.wait_for_log_lines(
        "worker", lambda line: line.get("message") == "duplicate job skipped" and line.get("job_id") == job_id
    )
    assert skipped, "the duplicate copy was not seen by the worker"
    assert deliveries(stack, user_id) == 1
    assert stack.wait_for_job(job_id)["state"] == "SUCCESS"  # the copy wrote no state over it
    assert int(store.get("users:next_id")) == users_before + 1
