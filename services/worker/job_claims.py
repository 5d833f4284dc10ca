"""Jobs idempotent by their id: one job id runs once, however many copies of its message arrive.

Copies of a job's message are normal here: a client retrying with the same Idempotency-Key queues the same
job id again, and the reconciler (services/worker/job_ledger.py) re-publishes a job that never started or
whose holder died. So every task starts by claiming its id in Redis, in one atomic script. A claim is a
LEASE: it names its holder (a random token per run) and runs out TRACEHOP_JOB_CLAIM_LEASE_S (30 s) after
it was last renewed; a thread in each worker process renews the leases of the jobs that process runs, every
third of the lease. A copy of attempt `a` (Celery's `retries`):

- the job finished (`done`) → does nothing (and takes the job off the ledger, if a late record put it back);
- the claim is for a LATER attempt, or for this attempt and that attempt ended in a retry → does nothing;
- the claim is for an EARLIER attempt (our own retry) → runs;
- the broker REDELIVERED this copy (its consumer died holding it, or the visibility timeout passed) → runs,
  taking the claim over (the broker saw its consumer go; a slow holder still alive then runs twice);
- another run holds a lease that has not run out → does nothing (Celery's `Ignore`: no state is written
  over the real one, and the message is acknowledged);
- the lease ran out (its holder died: SIGKILL, OOM, a pool child killed with its parent) → runs.

The claim does NOT take the job off the ledger: the job stays there, due when its lease would run out, until
it finishes. A claim that removed it (as before) left a job whose holder died to the broker alone, and the
redelivered message can be lost in kombu's BRPOP window once more; nor could the reconciler's copy run, as
a claim never ended (`worker:kill=job_claimed`, test_lost_job_window.py). Renewing the lease moves the
ledger's deadline with it; finishing (SUCCESS or FAILURE) marks the claim `done` and takes the job off the
ledger.

Celery's own STARTED state (`task_track_started`) is written before the task's code runs, so a skipped
copy would overwrite a finished job's SUCCESS with STARTED; we write STARTED ourselves, after the claim.
A claim lives as long as results do (`result_expires`): a copy arriving later than that would run again.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import redis
from celery import Task, states
from celery.exceptions import Ignore
from loguru import logger
from opentelemetry import trace

from services.demo import fault_injection
from services.web import settings

CLAIM_PREFIX = "tracehop:job:claim:"
# The ledger of accepted jobs that have not finished yet (job_ledger.py).
LEDGER_KEY = "tracehop:jobs:waiting"
LEDGER_MESSAGE_PREFIX = "tracehop:jobs:message:"
# Set on a copy the reconciler published again: the job's span says so.
REPUBLISHED_HEADER = "tracehop_republished"
KILL_POINT = "job_claimed"

# KEYS: claim, ledger, ledger message
# ARGV: attempt, redelivered ("1"/"0"), ttl seconds, job id, token, now, lease seconds
_CLAIM = """
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  -- a claim written before leases ('done', or an attempt number with no end): keep only 'done'
  local old = redis.call('GET', KEYS[1])
  redis.call('DEL', KEYS[1])
  if old == 'done' then redis.call('HSET', KEYS[1], 'state', 'done') end
end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'done' then
  redis.call('ZREM', KEYS[2], ARGV[4])
  redis.call('DEL', KEYS[3])
  return 0
end
if state then
  local held = tonumber(redis.call('HGET', KEYS[1], 'attempt'))
  local attempt = tonumber(ARGV[1])
  if attempt < held then return 0 end
  if attempt == held then
    if state == 'retried' then return 0 end
    local lease_end = tonumber(redis.call('HGET', KEYS[1], 'until'))
    if ARGV[2] ~= '1' and lease_end > tonumber(ARGV[6]) then return 0 end
  end
end
local lease_end = tonumber(ARGV[6]) + tonumber(ARGV[7])
redis.call('HSET', KEYS[1], 'attempt', ARGV[1], 'state', 'running', 'token', ARGV[5], 'until', lease_end)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], 'XX', lease_end, ARGV[4])
return 1
"""
# KEYS: claim, ledger; ARGV: token, now, lease seconds, job id. Only the lease's holder renews it.
_RENEW = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
local lease_end = tonumber(ARGV[2]) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'until', lease_end)
redis.call('ZADD', KEYS[2], 'XX', lease_end, ARGV[4])
return 1
"""
# KEYS: claim, ledger, ledger message; ARGV: ttl seconds, job id
_FINISH = """
redis.call('HSET', KEYS[1], 'state', 'done')
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[3])
return 1
"""
# KEYS: claim; ARGV: token. The holder's attempt ended in a retry, whose message is on the ledger already.
_RETRIED = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'retried')
return 1
"""
_SCRIPTS = {"claim": _CLAIM, "renew": _RENEW, "finish": _FINISH, "retried": _RETRIED}

_client: redis.Redis | None = None
_scripts: dict[str, object] = {}
# job id -> token of the runs this process holds now, renewed by one thread per process.
_held: dict[str, str] = {}
_held_lock = threading.Lock()
_renewer_pid = 0
# The worker's main process imports this module before its prefork pool forks.
_IMPORTED_IN = os.getpid()


def lease_s() -> float:
    return settings.env_float("TRACEHOP_JOB_CLAIM_LEASE_S", 30.0)


def claims_redis() -> redis.Redis:
    """One client per process, created on first use (after the prefork pool's fork)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(settings.redis_url(), socket_timeout=2, socket_connect_timeout=2)
        for name, source in _SCRIPTS.items():
            _scripts[name] = _client.register_script(source)
    return _client


def _keys(job_id: str) -> list[str]:
    return [CLAIM_PREFIX + job_id, LEDGER_KEY, LEDGER_MESSAGE_PREFIX + job_id]


def claim(job_id: str, attempt: int, redelivered: bool, ttl_s: int, token: str = "") -> bool:
    """True when this copy of the job should run (the module's rules); it then holds the lease `token`."""
    claims_redis()
    token = token or os.urandom(8).hex()
    args = [attempt, "1" if redelivered else "0", ttl_s, job_id, token, time.time(), lease_s()]
    return bool(_scripts["claim"](keys=_keys(job_id), args=args))


def renew(job_id: str, token: str) -> bool:
    """Extend the lease (and the job's ledger deadline with it); False when another run took it over."""
    claims_redis()
    return bool(_scripts["renew"](keys=_keys(job_id)[:2], args=[token, time.time(), lease_s(), job_id]))


def mark_done(job_id: str, ttl_s: int) -> None:
    claims_redis()
    _scripts["finish"](keys=_keys(job_id), args=[ttl_s, job_id])


def mark_retried(job_id: str, token: str) -> None:
    claims_redis()
    _scripts["retried"](keys=_keys(job_id)[:1], args=[token])


def _hold(job_id: str, token: str) -> None:
    """Renew this run's lease until `_release`: one daemon thread per process, started after any fork."""
    global _renewer_pid
    with _held_lock:
        _held[job_id] = token
        if _renewer_pid != os.getpid():
            _renewer_pid = os.getpid()
            threading.Thread(target=_renew_loop, name="job-lease-renewer", daemon=True).start()


def _release(job_id: str, token: str) -> None:
    with _held_lock:
        if _held.get(job_id) == token:
            del _held[job_id]


def _renew_loop() -> None:
    while True:
        time.sleep(lease_s() / 3)
        with _held_lock:
            held = list(_held.items())
        for job_id, token in held:
            try:
                renew(job_id, token)
            except redis.RedisError as exc:  # Redis away: the lease may run out and a copy run too
                logger.warning("renewing a job's lease failed", job_id=job_id, error_type=type(exc).__name__)


def _kill_point_whole_worker() -> None:
    """`worker:kill=job_claimed`: the whole worker dies right after the claim — its main process first (a
    prefork child's parent; its other children follow by their parent-death signal), then this process."""
    if not fault_injection.enabled():
        return
    if any(f.action == "kill" and f.point == KILL_POINT for f in fault_injection.faults_for("worker")):
        if os.getpid() != _IMPORTED_IN:  # a pool child, forked from the worker's main process
            os.kill(_IMPORTED_IN, signal.SIGKILL)
        fault_injection.kill_point("worker", KILL_POINT)


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
            republished = bool(_header(request, REPUBLISHED_HEADER))
            span = trace.get_current_span()
            if republished:
                span.set_attribute("job.republished", True)
            token = os.urandom(8).hex()
            if not claim(request.id, request.retries or 0, redelivered, self._claim_ttl(), token):
                span.set_attribute("job.duplicate_skipped", True)
                logger.info("duplicate job skipped", job_id=request.id, task=self.name)
                raise Ignore()
            request.tracehop_claim_token = token  # this run holds the lease (after_return ends it)
            # The lease is renewed while this run works, not until after_return: when storing the result
            # fails (Redis killed right then), Celery acknowledges the message and never calls
            # after_return, and a lease renewed on would keep that job STARTED forever (a `make chaos`
            # run on RabbitMQ did). Once the body ended, the lease runs out unless the job is marked
            # done, and the reconciler's copy runs it again.
            _hold(request.id, token)
            try:
                if not (redelivered or republished):  # a first delivery only: the copy that comes back runs
                    _kill_point_whole_worker()
                self.backend.store_result(
                    request.id,
                    {"pid": os.getpid(), "hostname": socket.gethostname()},
                    states.STARTED,
                    request=request,
                )
                self.before_job()
                return super().__call__(*args, **kwargs)
            finally:
                _release(request.id, token)
        self.before_job()
        return super().__call__(*args, **kwargs)

    def before_job(self) -> None:
        """Runs inside the job's span once the job is claimed, before its code (a hook for subclasses)."""

    def after_return(self, status: str, retval: object, task_id: str, args, kwargs, einfo) -> None:
        token = getattr(self.request, "tracehop_claim_token", None)
        if token and task_id:
            # After Celery stored the final state: a later copy (even a redelivered one) does nothing.
            if status in states.READY_STATES:
                mark_done(task_id, self._claim_ttl())
            elif status == states.RETRY:
                mark_retried(task_id, token)
        super().after_return(status, retval, task_id, args, kwargs, einfo)

    def _claim_ttl(self) -> int:
        expires = self.app.conf.result_expires
        seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
        return int(seconds or 24 * 3600)
