"""Is a component of the stack ready? One probe per component: an HTTP GET, a Redis PING, or for celery
beat (which answers nothing) the marker its running process writes once it has loaded its schedule."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from services.worker import beat_ready
from tracehop.stack.supervisor_client import SupervisorClient, SupervisorUnavailable

# Probes talk to 127.0.0.1: never through a proxy from the user's environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ReadinessProbe:
    """How to tell that `component` is ready: `url` is http(s)://... (200 expected) or redis://..."""

    component: str
    url: str

    def check(self, timeout: float = 1.0) -> str | None:
        """None when ready, else a short reason ("connection refused", "HTTP 503", ...)."""
        if self.url.startswith("redis://"):
            return redis_ping(self.url, timeout)
        return http_ok(self.url, timeout)


def http_ok(url: str, timeout: float = 1.0) -> str | None:
    try:
        with _DIRECT.open(url, timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as error:
        # A 503 from /readyz names the dependency that is missing: worth showing.
        return f"HTTP {error.code} {_short_body(error)}".rstrip()
    except (urllib.error.URLError, OSError) as error:
        return _reason(error)


def _short_body(error: urllib.error.HTTPError) -> str:
    try:
        body = error.read(300).decode("utf-8", errors="replace")
    except OSError:
        return ""
    try:
        message = json.loads(body).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or " ".join(body.split()))[:200]


def redis_ping(url: str, timeout: float = 1.0) -> str | None:
    """PING over a plain socket: enough to know the server answers, without a client library."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as error:
        return _reason(error)
    # "-NOAUTH ..." also proves the server is up and answering.
    return None if reply.startswith((b"+PONG", b"-NOAUTH")) else f"unexpected reply {reply[:32]!r}"


def _reason(error: Exception) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError):
        return "timed out"
    return str(reason) or type(reason).__name__


@dataclass(frozen=True)
class BeatProbe:
    """celery beat answers no request, and its schedule file outlives it: beat is ready once the process
    supervisord runs as `beat` NOW has loaded its schedule and ticked, which its ready marker says with its
    pid (services/worker/beat_ready.py). A marker a killed beat left names another pid: not ready."""

    marker: Path
    supervisor: SupervisorClient
    component: str = "beat"

    @property
    def url(self) -> str:
        return str(self.marker)

    def check(self, timeout: float = 1.0) -> str | None:
        try:
            info = self.supervisor.process(self.component)
        except SupervisorUnavailable as error:
            return f"supervisord does not answer ({error})"
        if info is None or not info.pid:
            return "no beat process runs"
        return beat_ready.problem(self.marker, info.pid)
