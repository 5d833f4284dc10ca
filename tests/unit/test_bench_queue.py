"""Queue depth and drain, against a real Redis-protocol server holding kombu's keys."""

from __future__ import annotations

import time

import pytest
import redis

from tracehop.bench.queue import UNACKED_HASH, queue_depth, queue_keys, wait_for_drain


@pytest.fixture
def client(valkey_url: str) -> redis.Redis:
    client = redis.Redis.from_url(valkey_url)
    client.delete(*queue_keys(), UNACKED_HASH)
    return client


def test_depth_counts_waiting_messages_in_every_priority_list_and_unacked_ones(client: redis.Redis):
    client.lpush("celery", "job-1", "job-2")
    client.lpush(queue_keys()[1], "job-3")
    client.hset(UNACKED_HASH, "tag", "job-4")
    depth = queue_depth(client)
    assert (depth.waiting, depth.unacked, depth.total) == (3, 1, 4)


def test_drain_time_counts_from_when_the_load_stopped(client: redis.Redis):
    assert wait_for_drain(client, time.monotonic() - 2.0, timeout_s=1).drain_s == pytest.approx(2.0, abs=0.5)


def test_a_queue_that_does_not_drain_is_purged_and_reported(client: redis.Redis):
    client.lpush("celery", "job-1", "job-2")
    client.hset(UNACKED_HASH, "tag", "job-3")
    result = wait_for_drain(client, time.monotonic(), timeout_s=0.1, poll_s=0.02)
    assert result.drain_s is None and result.left == 3 and result.purged == 2
    assert queue_depth(client).total == 0
