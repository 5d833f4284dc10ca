"""A job's final state stays final in the result backend (services/worker/result_backend.py), on a real
Redis-protocol server.

The interleaving that lost a finished job's SUCCESS in CI: a retried job's failed attempt reads the stored
state (STARTED), the retry (countdown 0) stores SUCCESS, then the failed attempt writes RETRY over it. The
test puts the retry's write into the failed attempt's gap between its read and its write, exactly there:
Celery's own backend ends in RETRY (the failure the class exists for), ours in SUCCESS.
"""

from __future__ import annotations

import time

import pytest
import redis
from celery import states
from celery.backends.redis import RedisBackend

from services.worker.celery_app import app as celery_app
from services.worker.result_backend import FinalStateRedisBackend


class Greylisted(Exception):
    pass


@pytest.fixture
def job_id(request: pytest.FixtureRequest) -> str:
    return f"job-{request.node.name}-{time.monotonic_ns()}"


def the_retry_succeeds_inside_the_gap(failed_attempt: RedisBackend, retry: RedisBackend, job_id: str) -> None:
    """Make the retry store SUCCESS right after the failed attempt's backend read the stored state."""
    read = failed_attempt._get_task_meta_for

    def read_then_let_the_retry_finish(task_id: str) -> dict:
        meta = read(task_id)
        retry.mark_as_done(job_id, {"delivered": True, "attempts": 2})
        return meta

    failed_attempt._get_task_meta_for = read_then_let_the_retry_finish


@pytest.mark.parametrize(
    ("backend_cls", "final_state"),
    [(RedisBackend, states.RETRY), (FinalStateRedisBackend, states.SUCCESS)],
    ids=["celery-redis-backend-loses-the-success", "ours-keeps-it"],
)
def test_a_retry_stored_after_the_retried_copy_succeeded_does_not_replace_its_success(
    valkey_url: str, job_id: str, backend_cls: type[RedisBackend], final_state: str
) -> None:
    failed_attempt = backend_cls(app=celery_app, url=valkey_url)
    retry = backend_cls(app=celery_app, url=valkey_url)
    failed_attempt.store_result(job_id, {"pid": 1}, states.STARTED)
    the_retry_succeeds_inside_the_gap(failed_attempt, retry, job_id)

    failed_attempt.mark_as_retry(job_id, Greylisted("451 4.7.1 greylisted"))

    reader = backend_cls(app=celery_app, url=valkey_url)
    assert reader.get_task_meta(job_id)["status"] == final_state


@pytest.mark.parametrize("final", [states.SUCCESS, states.FAILURE, states.REVOKED])
@pytest.mark.parametrize("later", [states.STARTED, states.RETRY, states.PENDING])
def test_a_state_that_is_not_final_never_replaces_a_final_one(
    valkey_url: str, job_id: str, final: str, later: str
) -> None:
    backend = FinalStateRedisBackend(app=celery_app, url=valkey_url)
    backend.store_result(job_id, {"done": True} if final == states.SUCCESS else Greylisted("no"), final)
    backend.store_result(job_id, {"pid": 2}, later)
    assert FinalStateRedisBackend(app=celery_app, url=valkey_url).get_task_meta(job_id)["status"] == final


def test_success_is_never_replaced_and_a_failure_only_by_a_final_state(valkey_url: str, job_id: str) -> None:
    backend = FinalStateRedisBackend(app=celery_app, url=valkey_url)
    backend.store_result(job_id, {"pid": 1}, states.STARTED)
    backend.store_result(job_id, None, states.RETRY)  # the ordinary order of a retried job
    assert backend.get_task_meta(job_id)["status"] == states.RETRY
    backend.mark_as_failure(job_id, Greylisted("gave up"))
    backend.mark_as_done(job_id, {"attempts": 3})  # Celery lets SUCCESS replace FAILURE: so do we
    backend.mark_as_failure(job_id, Greylisted("a late copy"))  # ...and never the other way round
    meta = FinalStateRedisBackend(app=celery_app, url=valkey_url).get_task_meta(job_id)
    assert (meta["status"], meta["result"]) == (states.SUCCESS, {"attempts": 3})


def test_a_stored_state_expires_and_is_published_as_celerys_is(valkey_url: str, job_id: str) -> None:
    backend = FinalStateRedisBackend(app=celery_app, url=valkey_url)
    key = backend.get_key_for_task(job_id)
    client = redis.Redis.from_url(valkey_url)
    listener = client.pubsub()
    listener.subscribe(key)  # what AsyncResult.get listens on
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    backend.mark_as_done(job_id, {"attempts": 1})
    message = listener.get_message(timeout=5)
    assert message is not None
    assert backend.decode_result(message["data"])["status"] == states.SUCCESS
    assert 0 < client.ttl(key) <= backend.expires
    backend.store_result(job_id, None, states.RETRY)  # refused: nothing published
    assert listener.get_message(timeout=0.5) is None
    listener.close()


def test_the_apps_backend_is_this_one_on_the_result_backend_setting() -> None:
    backend = celery_app.backend
    assert isinstance(backend, FinalStateRedisBackend)
    assert backend.url == celery_app.conf.result_backend
