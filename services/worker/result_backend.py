"""The result backend: Celery's Redis backend, with a job's final state kept final in one atomic step.

Why: Celery keeps a stored SUCCESS from being overwritten by reading the key first and writing it after
(celery/backends/base.py, `_store_result`): two round trips, with a gap between them. A retried job falls
into that gap. Its failed attempt publishes the retry first and stores RETRY only afterwards, and with
`retry_backoff` and full jitter the retry's countdown is 0 s half the time. The retry can then run on
another pool process and store SUCCESS between the failed attempt's read and its write. RETRY replaces
SUCCESS, and the job reads RETRY for as long as results are kept. It finished, but its caller never learns
it did. A CI run of `make test` did exactly that (test_greylisted_retry..., under load).

How: the read and the write happen in one Lua script, which Redis runs without interleaving anything.
A state that is not final (PENDING, STARTED, RETRY) never replaces a final one (SUCCESS, FAILURE,
REVOKED), and SUCCESS is never replaced (Celery's own rule). Otherwise the script does what Celery's
`_set` does: SET with the result's expiry (`result_failure_expires` for FAILURE), then PUBLISH on the
key's channel, which Celery's result consumers (`AsyncResult.get`) listen on.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from celery import states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError

# KEYS: the task's result key; ARGV: value, expiry in seconds ('0': none), '1' if the new state is final.
# The stored value is the result's JSON (result_serializer), whose `status` says its state.
_SET_UNLESS_FINAL = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' then
    local status = meta['status']
    if status == 'SUCCESS' then return 0 end
    if ARGV[3] == '0' and (status == 'FAILURE' or status == 'REVOKED') then return 0 end
  end
end
if ARGV[2] ~= '0' then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""


class FinalStateRedisBackend(RedisBackend):
    """Celery's Redis result backend whose state writes never undo a final state (module docstring).

    The app names this class (`WorkerCelery.backend_cls`), so Celery passes no URL: the backend's Redis
    is the `result_backend` setting's, as it would be for Celery's own class."""

    def __init__(self, app: Any = None, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(app=app, url=url or app.conf.result_backend, **kwargs)

    @cached_property
    def _set_unless_final(self) -> Any:
        return self.client.register_script(_SET_UNLESS_FINAL)

    def _set_with_state(self, key: bytes | str, value: bytes | str, state: str) -> bool:
        """Store a task's state unless a final one is stored already; True when it was written."""
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend")
        expires = self.failure_expires if state == states.FAILURE else self.expires
        final = "1" if state in states.READY_STATES else "0"
        args = [value, int(expires or 0), final]
        return bool(self.ensure(lambda: self._set_unless_final(keys=[key], args=args), ()))
