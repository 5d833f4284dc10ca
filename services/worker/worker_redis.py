"""The worker's own small records (chord links, jobs already done) in the result backend's Redis."""

from __future__ import annotations

import os

import redis
from celery import current_app

_clients: dict[int, redis.Redis] = {}


def worker_redis() -> redis.Redis:
    """One client per process, made on first use (after the fork), to the Celery app's result backend."""
    client = _clients.get(os.getpid())
    if client is None:
        url = current_app.conf.result_backend
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        _clients[os.getpid()] = client
    return client
