"""Queueing jobs for the worker and reading their state, through Celery on the Redis broker."""

from __future__ import annotations

import uuid
from typing import Any

import redis
from celery.result import AsyncResult
from kombu.exceptions import OperationalError

from services.web import settings
from services.worker.celery_app import app as celery_app
from services.worker.tasks import generate_report, send_welcome_email


class QueueUnavailable(Exception):
    """The broker (or the result backend) cannot be reached: nothing was queued."""


class JobQueue:
    def queue_welcome_email(self, user_id: int, email: str, job_id: str | None = None) -> str:
        """Queue the welcome e-mail; with `job_id`, under that id (a retry of the same request)."""
        domain = email.rpartition("@")[2]
        return self._queue(send_welcome_email, user_id, domain, job_id=job_id)

    def queue_report(self, user_id: int) -> str:
        return self._queue(generate_report, user_id)

    def _queue(self, task: Any, *args: Any, job_id: str | None = None) -> str:
        try:
            return task.apply_async(args=args, task_id=job_id).id
        except (OperationalError, OSError, redis.RedisError) as exc:
            raise QueueUnavailable(f"job queue unavailable: {type(exc).__name__}") from exc

    def job_status(self, job_id: str) -> dict[str, Any]:
        try:
            result = AsyncResult(job_id, app=celery_app)
            state = result.state
            payload: Any = None
            if state == "SUCCESS":
                payload = result.result
            elif state in ("FAILURE", "RETRY"):
                # The exception's type and message, never its traceback.
                error = result.result
                payload = {"error": type(error).__name__, "message": str(error)}
        except (OperationalError, OSError, redis.RedisError) as exc:
            raise QueueUnavailable(f"result backend unavailable: {type(exc).__name__}") from exc
        return {"job_id": job_id, "state": state, "result": payload}

    def is_healthy(self) -> bool:
        try:
            client = redis.Redis.from_url(settings.redis_url(), socket_timeout=1, socket_connect_timeout=1)
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
