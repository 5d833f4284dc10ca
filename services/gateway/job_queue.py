"""Queueing jobs for the worker and reading their state, through Celery on the Redis broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from services.worker.celery_app import app as celery_app
from services.worker.tasks import generate_report, send_welcome_email


class QueueUnavailable(Exception):
    """The broker, the result backend or the job ledger cannot be reached: the job was not published (if
    its ledger record was written, the reconciler publishes it later: services/worker/ledger_publish.py)."""


# What publishing to, or reading from, an unreachable broker or result backend raises.
_BROKER_ERRORS = (OperationalError, OSError, redis.RedisError)


@contextmanager
def broker_errors_as_unavailable(what: str = "job queue") -> Iterator[None]:
    """Turn the broker's connection errors into QueueUnavailable (which the gateway answers with 503)."""
    try:
        yield
    except _BROKER_ERRORS as exc:
        raise QueueUnavailable(f"{what} unavailable: {type(exc).__name__}") from exc
    except RuntimeError as exc:
        # Celery's Redis result consumer (subscribing to a new job's result in apply_async) turns a
        # reconnect that failed into RuntimeError("Retry limit exceeded ...") raised from the connection
        # error: the result backend is down, which is a 503 like any other, not a 500.
        if isinstance(exc.__cause__, _BROKER_ERRORS):
            raise QueueUnavailable(f"{what} unavailable: {type(exc.__cause__).__name__}") from exc
        raise


class JobQueue:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def queue_welcome_email(self, user_id: int, email: str, job_id: str | None = None) -> str:
        """Queue the welcome e-mail; with `job_id`, under that id (a retry of the same request)."""
        domain = email.rpartition("@")[2]
        return self._queue(send_welcome_email, user_id, domain, job_id=job_id)

    def queue_report(self, user_id: int) -> str:
        return self._queue(generate_report, user_id)

    def _queue(self, task: Any, *args: Any, job_id: str | None = None) -> str:
        with broker_errors_as_unavailable():
            return task.apply_async(args=args, task_id=job_id).id

    def job_status(self, job_id: str) -> dict[str, Any]:
        with broker_errors_as_unavailable("result backend"):
            result = AsyncResult(job_id, app=celery_app)
            state = result.state
            payload: Any = None
            if state == "SUCCESS":
                payload = result.result
            elif state in ("FAILURE", "RETRY"):
                # The exception's type and message, never its traceback.
                error = result.result
                payload = {"error": type(error).__name__, "message": str(error)}
        return {"job_id": job_id, "state": state, "result": payload}

    def is_healthy(self) -> bool:
        try:
            client = redis.Redis.from_url(self.redis_url, socket_timeout=1, socket_connect_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False


def is_valid_job_id(job_id: str) -> bool:
    try:
        uuid.UUID(job_id)
    except ValueError:
        return False
    return True
