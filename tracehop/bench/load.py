"""The bench's workload and its built-in load generator.

Workload (wrk's Lua script in wrk.py sends the same): `POST /api/users` (a users call and a queued
job) and `GET /api/users/<id>` (a users call) mixed at random, GET ids among users created beforehand.

The built-in generator: threads, each holding one keep-alive `http.client` connection. Two shapes:
- saturation (closed loop): each connection sends its next request as soon as the previous answer is in;
- fixed rate (open loop): request k is due at start + k/rate and whichever thread is free sends it; its
  latency counts from when it was DUE, not when it was sent, so a server that stalls cannot hide the
  stall by slowing the generator down ("coordinated omission", what wrk2 fixes and Debian's wrk lacks).

Threads rather than an async client: no extra dependency, and at the rates this stack reaches (hundreds
per second) they are far from their limit. That is shown, not assumed: `measure_ceiling` drives a trivial
server as fast as it can, and every window records the generator's own CPU time.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from tracehop.bench.stats import latency_percentiles_ms, round_or_none, slowest

CREATE_PATH = "/api/users"
REQUEST_TIMEOUT_S = 10.0
# A fixed-rate request sent this much later than it was due means the generator did not keep up.
BEHIND_SCHEDULE_S = 0.010


@dataclass(frozen=True)
class BenchRequest:
    kind: str  # "create" or "get"
    method: str
    path: str
    body: bytes | None = None


@dataclass(frozen=True)
class UserMix:
    """POST /api/users with probability `post_share`, else GET /api/users/<1..max_user_id>."""

    post_share: float = 0.5
    max_user_id: int = 20

    def next_request(self, rng: random.Random, serial: int) -> BenchRequest:
        if rng.random() < self.post_share:
            # example.org, never the greylisted domain: every job should succeed at its first attempt.
            body = {"name": "Bench User", "email": f"bench-{serial}@example.org"}
            return BenchRequest("create", "POST", CREATE_PATH, json.dumps(body).encode())
        return BenchRequest("get", "GET", f"/api/users/{rng.randint(1, self.max_user_id)}")


# Called in the generator's threads with each answer: (request, status, body, time.time() when read,
# seconds from when the request was due until then: its latency as the window counts it).
ResponseHook = Callable[[BenchRequest, int, bytes, float, float], None]


@dataclass
class LoadResult:
    """One load window as the generator saw it. `rps` counts successful (2xx) answers only."""

    generator: str  # "wrk" or "builtin"
    shape: str  # "saturation" or "fixed_rate"
    duration_s: float
    requests: int  # answered, any status
    created: int  # 201 answers to POST /api/users
    fetched: int  # 200 answers to GET /api/users/<id>
    errors: int  # other statuses, connection errors, timeouts
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cpu_s: float  # the generator's own CPU during the window
    target_rps: float | None = None
    behind_schedule: int = 0  # fixed rate: requests sent more than BEHIND_SCHEDULE_S late
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.created + self.fetched

    @property
    def rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "shape": self.shape,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "created": self.created,
            "fetched": self.fetched,
            "errors": self.errors,
            "rps": round(self.rps, 2),
            "p50_ms": round_or_none(self.p50_ms, 2),
            "p95_ms": round_or_none(self.p95_ms, 2),
            "p99_ms": round_or_none(self.p99_ms, 2),
            "max_ms": round_or_none(self.max_ms, 2),
            "cpu_s": round(self.cpu_s, 3),
            "target_rps": self.target_rps,
            "behind_schedule": self.behind_schedule,
            **self.extra,
        }


class _Connection:
    """One keep-alive connection; after any failure the next request opens a new one."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self._address = (host, port, timeout)
        self._connection: http.client.HTTPConnection | None = None

    def send(self, request: BenchRequest) -> tuple[int, bytes]:
        if self._connection is None:
            host, port, timeout = self._address
            self._connection = http.client.HTTPConnection(host, port, timeout=timeout)
        headers = {"Content-Type": "application/json"} if request.body is not None else {}
        try:
            self._connection.request(request.method, request.path, body=request.body, headers=headers)
            response = self._connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            # Never retried: a retried POST could create the user twice. Counted as an error.
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, body

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


@dataclass
class _ThreadTally:
    latencies_s: list[float] = field(default_factory=list)
    created: int = 0
    fetched: int = 0
    errors: int = 0
    behind: int = 0
    cpu_s: float = 0.0
    done: int = 0


class BuiltinLoad:
    """One window of built-in load. `start()`, poll `running()`/`completed`, then `result()`.

    `rate=None`: saturation with `connections` threads. `rate=R`: R requests per second spread over
    `connections` threads (enough of them that a slow answer does not delay the next due request).
    """

    def __init__(
        self,
        base_url: str,
        mix: UserMix,
        duration_s: float,
        connections: int = 8,
        rate: float | None = None,
        on_response: ResponseHook | None = None,
        seed: int | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the built-in generator speaks plain http to a host: got {base_url!r}")
        self._host, self._port = parts.hostname, parts.port or 80
        self._mix, self._duration_s, self._rate = mix, duration_s, rate
        self._on_response = on_response
        self._seed = random.randrange(2**32) if seed is None else seed
        self._serials = itertools.count(1)
        self._slot_lock = threading.Lock()
        self._next_slot = 0
        self._tallies = [_ThreadTally() for _ in range(connections)]
        self._threads = [
            threading.Thread(target=self._run_thread, args=(index,), name=f"bench-load-{index}", daemon=True)
            for index in range(connections)
        ]
        self._start = self._deadline = 0.0
        self._finished_at: float | None = None

    @property
    def shape(self) -> str:
        return "saturation" if self._rate is None else "fixed_rate"

    def start(self) -> BuiltinLoad:
        self._start = time.monotonic()
        self._deadline = self._start + self._duration_s
        for thread in self._threads:
            thread.start()
        return self

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    @property
    def completed(self) -> int:
        return sum(tally.done for tally in self._tallies)

    def result(self) -> LoadResult:
        for thread in self._threads:
            thread.join()
        if self._finished_at is None:
            self._finished_at = time.monotonic()
        latencies = [latency for tally in self._tallies for latency in tally.latencies_s]
        created = sum(t.created for t in self._tallies)
        fetched = sum(t.fetched for t in self._tallies)
        errors = sum(t.errors for t in self._tallies)
        # Fixed rate: the window is the schedule's length; saturation: until the last answer came in.
        duration = self._duration_s if self._rate is not None else self._finished_at - self._start
        # Fixed rate: the slowest tenth kept, so that a p99 can be taken over all windows together.
        extra = {} if self._rate is None else {"slowest_ms": [round(s * 1000, 2) for s in slowest(latencies)]}
        return LoadResult(
            generator="builtin",
            shape=self.shape,
            duration_s=duration,
            requests=created + fetched + errors,
            created=created,
            fetched=fetched,
            errors=errors,
            cpu_s=sum(t.cpu_s for t in self._tallies),
            target_rps=self._rate,
            behind_schedule=sum(t.behind for t in self._tallies),
            extra=extra,
            **latency_percentiles_ms(latencies),
        )

    def run(self) -> LoadResult:
        return self.start().result()

    def _due(self) -> float | None:
        """When the next request is due, or None when the window is over."""
        if self._rate is None:
            now = time.monotonic()
            return now if now < self._deadline else None
        with self._slot_lock:
            slot, self._next_slot = self._next_slot, self._next_slot + 1
        due = self._start + slot / self._rate
        return due if due < self._deadline else None

    def _run_thread(self, index: int) -> None:
        tally = self._tallies[index]
        rng = random.Random(self._seed + index)
        connection = _Connection(self._host, self._port, REQUEST_TIMEOUT_S)
        cpu_started = time.thread_time()
        try:
            while (due := self._due()) is not None:
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif self._rate is not None and -wait > BEHIND_SCHEDULE_S:
                    tally.behind += 1
                request = self._mix.next_request(rng, next(self._serials))
                try:
                    status, body = connection.send(request)
                except (OSError, http.client.HTTPException):
                    status, body = 0, b""
                answered = time.monotonic()
                tally.latencies_s.append(answered - due)
                if status == 201 and request.kind == "create":
                    tally.created += 1
                elif status == 200 and request.kind == "get":
                    tally.fetched += 1
                else:
                    tally.errors += 1
                tally.done += 1
                if self._on_response is not None:
                    self._on_response(request, status, body, time.time(), answered - due)
        finally:
            tally.cpu_s = time.thread_time() - cpu_started
            connection.close()
            self._finished_at = max(self._finished_at or 0.0, time.monotonic())


# -------------------------------------------------------------------------------- a trivial HTTP server

TRIVIAL_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class TrivialHttp(asyncio.Protocol):
    """Answers every request with 200 `{}` on a keep-alive connection, doing as little as possible.

    What the generators are measured against: anything the stack does costs far more than this.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            total = end + 4 + _content_length(self._buffer[:end])
            if len(self._buffer) < total:
                return
            self._buffer = self._buffer[total:]
            assert self._transport is not None
            self._transport.write(TRIVIAL_RESPONSE)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


async def serve_trivial_async(port: int, on_ready: Callable[[int], None]) -> None:
    server = await asyncio.get_running_loop().create_server(TrivialHttp, "127.0.0.1", port)
    on_ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def serve_trivial(port: int = 0) -> None:
    """Entry point of the trivial server's own process: prints the port it listens on, then serves."""
    asyncio.run(serve_trivial_async(port, lambda bound: print(bound, flush=True)))


class TrivialServer:
    """The trivial server in a process of its own, so it does not share a GIL with the generator."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> TrivialServer:
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from tracehop.bench.load import serve_trivial; serve_trivial()"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if not line.isdigit():
            self.__exit__()
            raise RuntimeError("the trivial HTTP server did not start")
        self.url = f"http://127.0.0.1:{line}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
