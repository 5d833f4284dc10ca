"""Slow clients against an HTTP port: the slow-client phase of a chaos run, and of the tests.

A slow-header client sends a request line and one header, then one more header line every `interval_s`;
a slow-body client sends complete headers announcing a 4 KiB body, then one more byte of it every
`interval_s`. Neither ever finishes. Meanwhile `slow_client_phase` asks `GET /healthz` like any normal
client and measures how long each answer takes.

    with SlowClients("127.0.0.1", 8080, header_clients=256, body_clients=256) as slow:
        ...                       # normal traffic, measured
    slow.answers                  # what the server said to the slow clients before it closed them

Only loopback addresses are accepted: this is a tool for one's own stack, not for someone else's.
"""

from __future__ import annotations

import ipaddress
import selectors
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

BODY_BYTES = 4096


class SlowClients:
    """`header_clients` + `body_clients` connections that trickle a request which never completes."""

    def __init__(
        self,
        host: str,
        port: int,
        header_clients: int = 256,
        body_clients: int = 256,
        interval_s: float = 1.0,
        path: str = "/api/users",
    ) -> None:
        address = socket.gethostbyname(host)
        if not ipaddress.ip_address(address).is_loopback:
            raise ValueError(f"slow clients only go to a loopback address, not {host} ({address})")
        self.host, self.port, self.path = address, port, path
        self.counts = {"header": header_clients, "body": body_clients}
        self.interval_s = interval_s
        self.opened = 0
        # What the server answered before closing a slow connection ("408", "503", …; "closed" for nothing).
        self.answers: Counter[str] = Counter()
        self._open: dict[socket.socket, str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._trickle, name="slow-clients", daemon=True)

    def __enter__(self) -> SlowClients:
        for kind, count in self.counts.items():
            for number in range(count):
                self._connect(kind, number)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def still_open(self) -> int:
        """Slow connections the server has not closed (yet)."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with self._lock:
            for sock in self._open:
                sock.close()
            self._open.clear()

    def _connect(self, kind: str, number: int) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=5)
        if kind == "header":
            first = f"GET /healthz HTTP/1.1\r\nHost: {self.host}\r\n"
        else:
            first = (
                f"POST {self.path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {BODY_BYTES}\r\n\r\n{{"
            )
        sock.sendall(first.encode())
        sock.setblocking(False)
        with self._lock:
            self._open[sock] = kind
        self.opened += 1

    def _trickle(self) -> None:
        selector = selectors.DefaultSelector()
        registered: set[socket.socket] = set()
        line = 0
        next_send = time.monotonic() + self.interval_s
        while not self._stop.is_set():
            with self._lock:
                current = dict(self._open)
            for sock in current.keys() - registered:
                selector.register(sock, selectors.EVENT_READ)
                registered.add(sock)
            # Readable means the server answered or closed: record what it said and let the socket go.
            for key, _ in selector.select(timeout=min(0.2, max(0.0, next_send - time.monotonic()))):
                self._finish(key.fileobj, selector, registered)
            if time.monotonic() >= next_send:
                line += 1
                for sock, kind in current.items():
                    if sock in registered:
                        self._send_more(sock, kind, line, selector, registered)
                next_send = time.monotonic() + self.interval_s
        selector.close()

    def _send_more(self, sock, kind, line, selector, registered) -> None:
        data = f"X-Slow-{line}: {line}\r\n".encode() if kind == "header" else b" "
        try:
            sock.send(data)
        except (BlockingIOError, InterruptedError):
            pass  # the server is not reading: that is the point
        except OSError:
            self._finish(sock, selector, registered)

    def _finish(self, sock, selector, registered) -> None:
        try:
            data = sock.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        parts = data.split(b" ", 2)
        answer = (
            parts[1].decode(errors="replace") if data.startswith(b"HTTP/") and len(parts) > 1 else "closed"
        )
        selector.unregister(sock)
        registered.discard(sock)
        with self._lock:
            self._open.pop(sock, None)
        self.answers[answer] += 1
        sock.close()


@dataclass
class SlowClientPhase:
    """What normal requests saw while slow clients held connections, and after they went away."""

    opened: int
    latencies_s: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    still_open_at_end: int = 0
    answers: dict[str, int] = field(default_factory=dict)
    after_s: float | None = None

    @property
    def worst_s(self) -> float:
        return max(self.latencies_s, default=float("inf"))

    def holds(self, limit_s: float = 1.0) -> bool:
        """Every normal request, during and after, was answered within `limit_s`."""
        return (
            not self.failures
            and bool(self.latencies_s)
            and self.worst_s < limit_s
            and self.after_s is not None
            and self.after_s < limit_s
        )


def slow_client_phase(
    gateway_url: str,
    duration_s: float = 10.0,
    header_clients: int = 256,
    body_clients: int = 256,
    interval_s: float = 1.0,
    probe_every_s: float = 0.25,
    probe_timeout_s: float = 5.0,
) -> SlowClientPhase:
    """Hold slow clients against `gateway_url` for `duration_s` while asking `GET /healthz`, then let them
    go and ask once more. The chaos run's slow-client phase: `slow_client_phase(url).holds()`."""
    parts = urlsplit(gateway_url)
    session = requests.Session()
    session.trust_env = False
    health = f"{gateway_url.rstrip('/')}/healthz"

    def probe() -> float | str:
        started = time.monotonic()
        try:
            response = session.get(health, timeout=probe_timeout_s)
        except requests.RequestException as error:
            return f"{type(error).__name__} after {time.monotonic() - started:.1f}s"
        if response.status_code != 200:
            return f"status {response.status_code}"
        return time.monotonic() - started

    slow = SlowClients(parts.hostname or "", parts.port or 80, header_clients, body_clients, interval_s)
    with slow:
        phase = SlowClientPhase(opened=slow.opened)
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            result = probe()
            if isinstance(result, str):
                phase.failures.append(result)
            else:
                phase.latencies_s.append(result)
            time.sleep(probe_every_s)
        phase.still_open_at_end = slow.still_open
        phase.answers = dict(slow.answers)
    after = probe()
    phase.after_s = after if isinstance(after, float) else None
    if isinstance(after, str):
        phase.failures.append(f"after the slow clients left: {after}")
    session.close()
    return phase
