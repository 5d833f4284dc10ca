"""Jobs idempotent by their id: one job id runs once, however many copies of its message arrive.

Copies of a job's message are normal here: a client retrying with the same Idempotency-Key queues the same
job id again, and the reconciler (services/worker/job_ledger.py) re-publishes a job that never started.
So every task starts by claiming its id in Redis, in one atomic script:

- no claim yet → claimed, the job runs (and is taken off the ledger of jobs waiting to start);
- a claim by an EARLIER attempt (Celery's `retries` count is higher now: our own retry) → runs;
- a message the broker REDELIVERED (its consumer died holding it: late ack) → runs again, taking over;
- the job already finished (`done`), or another copy holds the claim → this copy does nothing: Celery's
  `Ignore`, so no state is written over the real one, and the message is acknowledged.

Celery's own STARTED state (`task_track_started`) is written before the task's code runs, so a skipped
copy would overwrite a finished job's SUCCESS with STARTED; we write STARTED ourselves, after the claim.
A claim lives as long as results do (`result_expires`): a copy arriving later than that would run again.
"""

from __future__ import annotations

import os
import socket

import redis
from celery import Task, states
from celery.exceptions import Ignore
from loguru import logger
from opentelemetry import trace

from services.web import settings

CLAIM_PREFIX = "tracehop:job:claim:"
DONE = "done"
# The ledger of accepted jobs that have not started yet (job_ledger.py); claiming takes a job off it.
LEDGER_KEY = "tracehop:jobs:waiting"
LEDGER_MESSAGE_PREFIX = "tracehop:jobs:message:"
# Set on a copy the reconciler published again: the job's span says so.
REPUBLISHED_HEADER = "tracehop_republished"

# KEYS: claim, ledger, ledger message; ARGV: attempt number, redelivered ("1"/"0"), ttl seconds, job id
_CLAIM = """
local current = redis.call('GET', KEYS[1])
if current == 'done' then return 0 end
if current and ARGV[2] ~= '1' and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('DEL', KEYS[3])
return 1
"""

_client: redis.Redis | None = None
_claim_script = None


def claims_redis() -> redis.Redis:
    """One client per process, created on first use (after the prefork pool's fork)."""
    global _client, _claim_script
    if _client is None:
        _client = redis.Redis.from_url(settings.redis_url(), socket_timeout=2, socket_connect_timeout=2)
        _claim_script = _client.register_script(_CLAIM)
    return _client


def claim(job_id: str, attempt: int, redelivered: bool, ttl_s: int) -> bool:
    """True when this copy of the job should run (see the module's rules)."""
    claims_redis()
    keys = [CLAIM_PREFIX + job_id, LEDGER_KEY, LEDGER_MESSAGE_PREFIX + job_id]
    return bool(_claim_script(keys=keys, args=[attempt, "1" if redelivered else "0", ttl_s, job_id]))


def mark_done(job_id: str, ttl_s: int) -> None:
    claims_redis().set(CLAIM_PREFIX + job_id, DONE, ex=ttl_s)


def _header(request: object, name: str) -> object:
    """A custom message header: an attribute of the request, or in its `headers` (protocol 2 keeps
    headers Celery does not know there)."""
    value = getattr(request, name, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(name)
    return value


class IdempotentTask(Task):
    """The base of every tracehop task: claims the job id before the job runs (module docstring)."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        request = self.request
        if request.id and not request.is_eager:
            redelivered = bool((request.delivery_info or {}).get("redelivered"))
            span = trace.get_current_span()
            if _header(request, REPUBLISHED_HEADER):
                span.set_attribute("job.republished", True)
            if not claim(request.id, request.retries or 0, redelivered, self._claim_ttl()):
                span.set_attribute("job.duplicate_skipped", True)
                logger.info("duplicate job skipped", job_id=request.id, task=self.name)
                raise Ignore()
            self.backend.store_result(
                request.id,
                {"pid": os.getpid(), "hostname": socket.gethostname()},
                states.STARTED,
                request=request,
            )
        self.before_job()
        return super().__call__(*args, **kwargs)

    def before_job(self) -> None:
        """Runs inside the job's span once the job is claimed, before its code (a hook for subclasses)."""

    def after_return(self, status: str, retval: object, task_id: str, args, kwargs, einfo) -> None:  # noqa: ANN001
        # After Celery stored the final state: a copy arriving later (even a redelivered one) does nothing.
        if status in states.READY_STATES and not self.request.is_eager and task_id:
            mark_done(task_id, self._claim_ttl())
        super().after_return(status, retval, task_id, args, kwargs, einfo)

    def _claim_ttl(self) -> int:
        expires = self.app.conf.result_expires
        seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
        return int(seconds or 24 * 3600)
