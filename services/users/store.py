"""Users kept in Redis: one hash per user, ids from a counter.

`create` and `get` are this service's domain functions, so they are `@traced` (pattern 1, automatic
spans): each call is an INTERNAL span `UserStore.create` / `UserStore.get` whose children are the Redis
commands it sent (CLIENT spans of the redis instrumentation) and whose events are its log lines
(pattern 3). The trace shows exactly which step asked the database what.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis
from loguru import logger

from services.telemetry.traced import traced
from services.users.database import with_retry

NEXT_ID_KEY = "users:next_id"
IDEMPOTENCY_PREFIX = "users:idempotency:"
# How long a key is remembered: a client retries within minutes; a day is the common convention.
IDEMPOTENCY_TTL_S = 24 * 3600

# Creates the user and remembers which user the key created, in one step: a process killed half-way
# leaves either nothing or both. KEYS: key record, id counter; ARGV: name, e-mail, ttl.
# Returns {created (1/0), user id}.
_CREATE_ONCE = """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, tonumber(existing)} end
local user_id = redis.call('INCR', KEYS[2])
redis.call('HSET', 'users:' .. user_id, 'name', ARGV[1], 'email', ARGV[2])
redis.call('SET', KEYS[1], user_id, 'EX', ARGV[3])
return {1, user_id}
"""


def user_key(user_id: int) -> str:
    return f"users:{user_id}"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class IdempotencyKeyReused(Exception):
    """The key already created a user with other details."""


class UserStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client
        self._create_once = client.register_script(_CREATE_ONCE)

    # A person's name is personal data with no diagnostic value: skipped. The e-mail address is recorded
    # masked (`arg.email = "a***@example.org"`): the domain is what explains a delivery problem.
    @traced(skip=("name",))
    def create(self, name: str, email: str) -> User:
        def write() -> int:
            user_id = int(self._redis.incr(NEXT_ID_KEY))
            self._redis.hset(user_key(user_id), mapping={"name": name, "email": email})
            return user_id

        user_id = with_retry(write)
        logger.info("user created", user_id=user_id)
        return User(user_id, name, email)

    @traced(skip=("name", "idempotency_key"))
    def create_once(self, name: str, email: str, idempotency_key: str) -> tuple[User, bool]:
        """The user this key created, creating it on the key's first use: (user, created now)."""
        keys = [IDEMPOTENCY_PREFIX + idempotency_key, NEXT_ID_KEY]
        created, user_id = with_retry(
            lambda: self._create_once(keys=keys, args=[name, email, IDEMPOTENCY_TTL_S])
        )
        if created:
            logger.info("user created", user_id=user_id)
            return User(int(user_id), name, email), True
        existing = self.get(int(user_id))
        if existing is None or (existing.name, existing.email) != (name, email):
            raise IdempotencyKeyReused(f"the key already created user {user_id} with other details")
        logger.info("user already created with this key", user_id=user_id)
        return existing, False

    @traced
    def get(self, user_id: int) -> User | None:
        logger.info("fetching user", user_id=user_id)
        fields = with_retry(lambda: self._redis.hgetall(user_key(user_id)))
        if not fields:
            return None
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        return User(user_id, decoded["name"], decoded["email"])
