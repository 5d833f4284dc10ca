"""Building the gateway in-process for unit tests: real users over HTTP, a real Redis-protocol broker."""

from __future__ import annotations

import json
from typing import Any

import redis
from flask import Flask

from services.clients.users_client import UsersClient
from services.gateway import create_app
from services.gateway.idempotency import IdempotencyStore
from services.gateway.job_queue import JobQueue
from services.worker.celery_app import app as celery_app


def point_celery_at(valkey_url: str) -> redis.Redis:
    """Send the gateway's jobs to the test broker, with an empty queue."""
    celery_app.conf.broker_url = valkey_url
    celery_app.conf.result_backend = valkey_url
    client = redis.Redis.from_url(valkey_url)
    client.delete("celery")
    return client


def gateway_app(users_url: str, **config: Any) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "USERS_CLIENT": UsersClient(users_url, token="test-token"),
            "JOB_QUEUE": JobQueue(),
            "IDEMPOTENCY_STORE": IdempotencyStore(redis.Redis.from_url(celery_app.conf.result_backend)),
            **config,
        }
    )


def queued_headers(broker: redis.Redis) -> list[dict[str, Any]]:
    """The headers of every message waiting in Celery's default queue."""
    return [json.loads(raw)["headers"] for raw in broker.lrange("celery", 0, -1)]
