"""How many jobs are still waiting or running, read straight from the Celery broker (Redis).

kombu's Redis transport keeps waiting messages in a list named after the queue (`celery`, plus one list
per extra priority step) and, because the worker acknowledges late (`task_acks_late`), every message a
worker has taken but not finished in the hash `unacked`. Both empty = every queued job is done. Reading
two keys is much cheaper than `celery inspect`, which would itself wait on the worker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

QUEUE = "celery"
# kombu's priority steps 3, 6 and 9 live in lists named QUEUE + "\x06\x16" + step.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
UNACKED_HASH = "unacked"
UNACKED_INDEX = "unacked_index"


def queue_keys(queue: str = QUEUE) -> list[str]:
    return [queue, *(f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS)]


@dataclass(frozen=True)
class QueueDepth:
    waiting: int
    unacked: int  # taken by a worker, not finished yet

    @property
    def total(self) -> int:
        return self.waiting + self.unacked


def queue_depth(client: redis.Redis) -> QueueDepth:
    pipe = client.pipeline(transaction=False)
    for key in queue_keys():
        pipe.llen(key)
    pipe.hlen(UNACKED_HASH)
    *lengths, unacked = pipe.execute()
    return QueueDepth(waiting=sum(lengths), unacked=unacked)


@dataclass(frozen=True)
class DrainResult:
    drain_s: float | None  # None: not drained within the timeout
    left: int  # jobs still queued or running at the end
    purged: int  # jobs thrown away so that the next window starts with an empty queue


def wait_for_drain(
    client: redis.Redis, load_stopped_at: float, timeout_s: float, poll_s: float = 0.05
) -> DrainResult:
    """Poll until no job waits or runs; the time is counted from `load_stopped_at` (time.monotonic())."""
    deadline = time.monotonic() + timeout_s
    while True:
        depth = queue_depth(client)
        now = time.monotonic()
        if depth.total == 0:
            return DrainResult(drain_s=max(0.0, now - load_stopped_at), left=0, purged=0)
        if now > deadline:
            return DrainResult(drain_s=None, left=depth.total, purged=purge(client))
        time.sleep(poll_s)


def purge(client: redis.Redis) -> int:
    """Drop the jobs still waiting (and forget the unacknowledged ones); return how many were waiting.

    Only for the bench: a window that did not drain must not hand its backlog to the next window.
    """
    keys = queue_keys()
    waiting = sum(client.llen(key) for key in keys)
    client.delete(*keys, UNACKED_HASH, UNACKED_INDEX)
    return waiting
