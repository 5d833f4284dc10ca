"""What `python -m tracehop.bench.tail` reads back: the tail probe's event files, and each request's
latency taken apart by where it was spent.

The generator tags every request with its serial (`?tail=<n>`), and the probe in each Flask process
records every request it served with its start, wall time, thread CPU and run-queue wait
(tail_probe/sitecustomize.py). A gateway request is found by its tag; the users request it made is the
one of the same kind that started inside it. So each request's latency (from when it was due) splits
into:

- `send_late`: due → the generator sent it (the generator's own threads late);
- `to_gateway`: sent → the gateway's Flask app began it (kernel, the gevent worker's accept and read,
  other greenlets of that worker running first);
- `gateway_to_users`: gateway began → users began (the gateway's own work before the call, the call's
  way there);
- `users`: users' Flask app from start to end;
- `gateway_after_users`: users ended → gateway ended (the answer's way back, the gateway's work after it,
  the job's publish for a POST);
- `back`: gateway ended → the generator had the whole answer.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracehop.bench.stats import percentile

PARTS = ("send_late", "to_gateway", "gateway_to_users", "users", "gateway_after_users", "back")
_TAG = re.compile(r"[?&]tail=(\d+)")
# The generator's and the services' wall clocks are one clock, read at slightly different moments.
_CLOCK_SLACK_NS = 10**9


@dataclass
class Served:
    """One request as a Flask process served it (an `R` line), or one POST the store ingested (`S`)."""

    start: int
    wall: int
    cpu: int
    runq: int
    method: str = ""
    path: str = ""
    size: int = 0  # a store POST's body, bytes

    @property
    def end(self) -> int:
        return self.start + self.wall


@dataclass
class ProcessEvents:
    pid: int
    service: str
    argv: str = ""
    # (start wall ns, wall ns, thread cpu ns, generation, collected)
    gcs: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    # (start wall ns, wall ns, thread cpu ns, spans, longest stretch between the encoder's pauses ns)
    exports: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    requests: list[Served] = field(default_factory=list)
    store_posts: list[Served] = field(default_factory=list)

    @property
    def is_store(self) -> bool:
        return "trace-store" in self.argv


def read_events(probe_dir: Path) -> list[ProcessEvents]:
    processes = []
    for path in probe_dir.glob("*.events"):
        events = None
        for line in path.read_text().splitlines():
            fields = line.split()
            if not fields:
                continue
            kind = fields[0]
            if kind == "P":
                events = ProcessEvents(int(fields[1]), fields[3], " ".join(fields[4:]))
                processes.append(events)
            elif events is None:
                continue
            elif kind in ("G", "E") and len(fields) == 6:
                values = tuple(int(value) for value in fields[1:])
                (events.gcs if kind == "G" else events.exports).append(values)  # type: ignore[arg-type]
            elif kind == "R" and len(fields) == 7:
                events.requests.append(Served(*(int(v) for v in fields[1:5]), fields[5], fields[6]))
            elif kind == "S" and len(fields) == 6:
                events.store_posts.append(Served(*(int(v) for v in fields[1:5]), size=int(fields[5])))
    return processes


@dataclass
class ClientRequest:
    """One request as the generator saw it (wall clock ns; runq of the generator's thread)."""

    serial: int
    kind: str
    due: int
    sent: int
    answered: int
    runq: int

    @property
    def latency(self) -> int:
        return self.answered - self.due


@dataclass
class Breakdown:
    request: ClientRequest
    parts: dict[str, int]  # PARTS -> ns
    gateway_runq: int
    users_runq: int
    gateway_pid: int


def _users_path(gateway_path: str) -> str:
    return gateway_path.split("?")[0].replace("/api/users", "/users", 1)


def break_down(requests: Sequence[ClientRequest], processes: Sequence[ProcessEvents]) -> list[Breakdown]:
    # Serials restart with every window, and a stack's probe files hold all its windows: a serial names
    # one gateway record per window, told apart by when it ran.
    gateway: dict[int, list[tuple[int, Served]]] = {}
    for process in processes:
        if process.service == "gateway":
            for served in process.requests:
                match = _TAG.search(served.path)
                if match:
                    gateway.setdefault(int(match.group(1)), []).append((process.pid, served))
    users = sorted(
        (served for p in processes if p.service == "users" for served in p.requests), key=lambda s: s.start
    )
    starts = [served.start for served in users]
    found = []
    for request in requests:
        same_request = [
            (pid, served)
            for pid, served in gateway.get(request.serial, ())
            if request.sent - _CLOCK_SLACK_NS <= served.start <= request.answered
        ]
        if not same_request:
            continue
        pid, outer = same_request[0]
        wanted = (outer.method, _users_path(outer.path))
        inner = None
        for index in range(bisect_left(starts, outer.start), len(users)):
            candidate = users[index]
            if candidate.start > outer.end:
                break
            if (candidate.method, candidate.path) == wanted and candidate.end <= outer.end:
                inner = candidate
                break
        if inner is None:
            continue
        parts = {
            "send_late": request.sent - request.due,
            "to_gateway": outer.start - request.sent,
            "gateway_to_users": inner.start - outer.start,
            "users": inner.wall,
            "gateway_after_users": outer.end - inner.end,
            "back": request.answered - outer.end,
        }
        found.append(Breakdown(request, parts, outer.runq, inner.runq, pid))
    return found


def _ms(values: Iterable[float]) -> float:
    values = list(values)
    return round(sum(values) / len(values) / 1e6, 3) if values else 0.0


def summarise_breakdowns(breakdowns: Sequence[Breakdown]) -> dict[str, Any]:
    """Mean ms of each part for the slowest 1% of requests, for the median 50% (p25–p75), and what the
    slowest 1% spent more than those in each part: where the tail's extra time went."""
    ordered = sorted(breakdowns, key=lambda b: b.request.latency)
    if not ordered:
        return {}
    n = len(ordered)
    slow = ordered[int(n * 0.99) :]
    middle = ordered[n // 4 : 3 * n // 4]

    def describe(group: Sequence[Breakdown]) -> dict[str, float]:
        means = {part: _ms(b.parts[part] for b in group) for part in PARTS}
        means["latency"] = _ms(b.request.latency for b in group)
        means["gateway_runq"] = _ms(b.gateway_runq for b in group)
        means["users_runq"] = _ms(b.users_runq for b in group)
        means["generator_runq"] = _ms(b.request.runq for b in group)
        return means

    slow_means, middle_means = describe(slow), describe(middle)
    extra = {key: round(slow_means[key] - middle_means[key], 3) for key in slow_means}
    return {
        "matched": n,
        "slowest_1pct": slow_means,
        "middle_50pct": middle_means,
        "slowest_minus_middle": extra,
        "slowest_1pct_posts": sum(b.request.kind == "create" for b in slow),
        "slowest_1pct_requests": [
            {"latency_ms": round(b.request.latency / 1e6, 2), "kind": b.request.kind}
            | {part: round(b.parts[part] / 1e6, 2) for part in PARTS}
            | {
                "gateway_runq_ms": round(b.gateway_runq / 1e6, 2),
                "users_runq_ms": round(b.users_runq / 1e6, 2),
            }
            for b in slow[::-1]
        ],
    }


def store_posts(processes: Sequence[ProcessEvents], lo: int, hi: int) -> list[Served]:
    return [post for p in processes if p.is_store for post in p.store_posts if lo <= post.start < hi]


def summarise_served(posts: Sequence[Served], requests_n: int) -> dict[str, Any]:
    """How many per 1,000 requests, their thread CPU, wall time and run-queue wait."""
    if not posts:
        return {}
    per_1000 = 1000 / max(1, requests_n)
    cpus = sorted(post.cpu / 1e6 for post in posts)
    summary = {
        "per_1000_req": round(len(posts) * per_1000, 1),
        "cpu_ms_per_1000_req": round(sum(cpus) * per_1000, 2),
        "cpu_ms_p50": round(percentile(cpus, 50) or 0, 3),
        "cpu_ms_max": round(cpus[-1], 3),
        "wall_ms_p50": round(percentile(sorted(post.wall / 1e6 for post in posts), 50) or 0, 3),
        "wall_ms_max": round(max(post.wall for post in posts) / 1e6, 3),
        "runq_ms_max": round(max(post.runq for post in posts) / 1e6, 3),
    }
    if any(post.size for post in posts):  # store POSTs have a body size; requests do not
        summary["body_kb_p50"] = round((percentile(sorted(post.size for post in posts), 50) or 0) / 1024, 1)
    return summary
