"""Users kept in Redis: one hash per user, ids from a counter.

Each method is one or two Redis commands, and each command is a CLIENT span of the redis
instrumentation, so the trace shows exactly what this service asked its database.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import redis

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

    def create(self, name: str, email: str) -> User:
        user_id = int(self._redis.incr(NEXT_ID_KEY))
        self._redis.hset(user_key(user_id), mapping={"name": name, "email": email})
        return User(user_id, name, email)

    def get(self, user_id: int) -> User | None:
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
