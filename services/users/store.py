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

NEXT_ID_KEY = "users:next_id"


def user_key(user_id: int) -> str:
    return f"users:{user_id}"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    email: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class UserStore:
    def __init__(self, client: redis.Redis) -> None:
        self._redis = client

    # A person's name is personal data with no diagnostic value: skipped. The e-mail address is recorded
    # masked (`arg.email = "a***@example.org"`): the domain is what explains a delivery problem.
    @traced(skip=("name",))
    def create(self, name: str, email: str) -> User:
        user_id = int(self._redis.incr(NEXT_ID_KEY))
        self._redis.hset(user_key(user_id), mapping={"name": name, "email": email})
        logger.info("user created", user_id=user_id)
        return User(user_id, name, email)

    @traced
    def get(self, user_id: int) -> User | None:
        logger.info("fetching user", user_id=user_id)
        fields = self._redis.hgetall(user_key(user_id))
        if not fields:
            return None
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        return User(user_id, decoded["name"], decoded["email"])

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except redis.RedisError:
            return False
