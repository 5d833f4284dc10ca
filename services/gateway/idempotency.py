"""What `POST /api/users` remembers per Idempotency-Key: the request's fingerprint and its welcome job.

Creating a user is two steps in two places — users creates the user, then the gateway queues the welcome
job — and the gateway process can die between them. With a key, both steps can be repeated safely:

1. `reserve` records, once per key, a fingerprint of the body and the job id the welcome job will have
   (chosen now, so every retry queues the SAME job id);
2. users creates the user at most once per key (its own atomic record, services/users/store.py);
3. the job is queued under that id unless the record says it already was. A copy queued twice (the
   process died after publishing, before `mark_queued`) runs once: jobs are idempotent by id
   (services/worker/job_claims.py).

A retry with the same key and another body is refused (422): the key names one request, not a user.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from dataclasses import dataclass

import redis

RECORD_PREFIX = "tracehop:idempotency:create_user:"
TTL_S = 24 * 3600

# KEYS: record; ARGV: fingerprint, new job id, ttl. Returns {first use (1/0), job id, queued, fingerprint}.
_RESERVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'job_id', ARGV[2], 'queued', '0')
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  return {1, ARGV[2], '0', ARGV[1]}
end
local r = redis.call('HMGET', KEYS[1], 'fingerprint', 'job_id', 'queued')
return {0, r[2], r[3], r[1]}
"""


class IdempotencyKeyMismatch(Exception):
    """The key was used before for a request with another body."""


class IdempotencyUnavailable(Exception):
    """Redis, where the records live, cannot be reached."""


@dataclass(frozen=True)
class Reservation:
    job_id: str
    queued: bool  # the first attempt got as far as queueing the job
    replay: bool  # the key was seen before


def fingerprint(name: str, email: str) -> str:
    return hashlib.sha256(json.dumps([name, email], ensure_ascii=False).encode()).hexdigest()


class IdempotencyStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._reserve = self._redis.register_script(_RESERVE)

    def reserve(self, key: str, request_fingerprint: str) -> Reservation:
        try:
            first, job_id, queued, stored = self._reserve(
                keys=[_record_key(key)], args=[request_fingerprint, str(uuid.uuid4()), TTL_S]
            )
        except redis.RedisError as exc:
            raise IdempotencyUnavailable(f"idempotency records unavailable: {type(exc).__name__}") from exc
        if _text(stored) != request_fingerprint:
            raise IdempotencyKeyMismatch("this Idempotency-Key was used for a request with another body")
        return Reservation(job_id=_text(job_id), queued=_text(queued) == "1", replay=not first)

    def mark_queued(self, key: str) -> None:
        # Best effort: if this write is lost, a retry queues the job again, which runs once (by id).
        with contextlib.suppress(redis.RedisError):
            self._redis.hset(_record_key(key), "queued", "1")


def _record_key(key: str) -> str:
    # Hashed: the record's name has a fixed length whatever the client sent.
    return RECORD_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
