"""HTTP client of the users service, used by the gateway and by worker jobs.

One pooled `requests.Session` per process: reusing connections matters for latency and for the cost of
tracing (every new connection is work the requests instrumentation also pays for). The requests
instrumentation turns each call into a CLIENT span and injects `traceparent`/`baggage` headers.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from services.web import settings

SERVICE_TOKEN_HEADER = "X-Service-Token"
# Reaching users is loopback or one network hop: a second is plenty. TRACEHOP_USERS_TIMEOUT is the wait
# for its answer.
CONNECT_TIMEOUT_S = 1.0


class UsersUnavailable(Exception):
    """users could not be reached, timed out, or failed (5xx): the caller answers 503."""


class UsersRejected(Exception):
    """users answered a 4xx: the caller relays its status, error code and message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status, self.error, self.message = status, error, message


class RetryStaleConnectionOnce(Retry):
    """urllib3's Retry, except that a timeout is never retried.

    The one retry exists for a pooled keep-alive connection that the server closed just as it was reused
    (a reset, or "remote end closed connection"). Retrying a timeout instead would double the time a
    caller waits on a users service that accepts connections and never answers:
    TRACEHOP_USERS_TIMEOUT is meant as the bound of a call, not of each of its attempts.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        # Each raised the way urllib3 itself does when it may not retry, so requests turns it into its
        # own ReadTimeout / ConnectTimeout. A refused connection is no timeout, although urllib3 derives
        # NewConnectionError from ConnectTimeoutError: it is retried as before.
        if isinstance(error, ReadTimeoutError):
            raise error.with_traceback(_stacktrace)
        if isinstance(error, ConnectTimeoutError) and not isinstance(error, NewConnectionError):
            raise MaxRetryError(_pool, url, error) from error
        return super().increment(method, url, response, error, _pool, _stacktrace)


class UsersClient:
    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout_s: float | None = None,
        pool_size: int = 16,
    ) -> None:
        self.base_url = (base_url or settings.users_url()).rstrip("/")
        self.timeout = (CONNECT_TIMEOUT_S, timeout_s if timeout_s is not None else settings.users_timeout_s())
        self.session = requests.Session()
        # No proxy or .netrc lookups in the environment on every call: users is an internal address.
        self.session.trust_env = False
        self.session.headers[SERVICE_TOKEN_HEADER] = token if token is not None else settings.service_token()
        # A pooled keep-alive connection may be closed by the server just as it is reused; retrying an
        # idempotent GET once hides that race. POST is never retried (it could create the user twice),
        # and a timeout never is (RetryStaleConnectionOnce).
        retry = RetryStaleConnectionOnce(
            total=1, connect=1, read=1, status=0, allowed_methods={"GET"}, backoff_factor=0
        )
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def create_user(self, name: str, email: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """The new user; with a key, the user this key created before (users remembers it a day)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        return self._call("POST", "/users", json={"name": name, "email": email}, headers=headers)

    def get_user(self, user_id: int) -> dict[str, Any]:
        return self._call("GET", f"/users/{user_id}")

    def is_healthy(self) -> bool:
        try:
            return self.session.get(f"{self.base_url}/healthz", timeout=self.timeout).status_code == 200
        except requests.RequestException:
            return False

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.session.request(method, f"{self.base_url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise UsersUnavailable(f"users service unreachable: {type(exc).__name__}") from exc
        if response.status_code >= 500:
            raise UsersUnavailable(f"users service failed with status {response.status_code}")
        body = _json_or_empty(response)
        if response.status_code >= 400:
            raise UsersRejected(
                response.status_code,
                str(body.get("error", "rejected")),
                str(body.get("message", f"users answered {response.status_code}")),
            )
        return body


def _json_or_empty(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
