"""Where the traced tail at 100 req/s comes from: request by request, and what ran beside the slow ones.

    python -m tracehop.bench.tail                      # untraced and tracehop, 3 rounds x 20 s at 100 req/s
    python -m tracehop.bench.tail --variant nofreeze:TRACEHOP_GC_FREEZE=false --rounds 4
    python -m tracehop.bench.tail --freshness --variant untraced --variant tracehop \
        --variant storenice:TRACEHOP_TAIL_STORE_NICE=10

`make bench` gives one p99 per window, and on a shared 2-core machine the neighbours move it more than
tracing does. This tool measures what can cause a slow request instead: each process of every stack
records its garbage collections, span exports, Flask requests and (the trace store) OTLP POSTs and
query-API requests (`tail_probe/sitecustomize.py`, loaded only in the stacks this tool starts), with
thread CPU time, which the neighbours do not stretch, and run-queue wait beside wall time; the generator
tags each request so that its latency can be split between the generator, the gateway and users
(`tail_events.py`). The report says, per service and per 1,000 requests, how many collections of each
generation ran and how long they held the interpreter, how long each export and store POST took, how
often the slowest 1% of requests overlapped each of them compared with all requests, and where the
slowest 1% spent their extra time compared with the middle half. Modes run interleaved (ABAB…, then
BABA…) in the same minutes. `--freshness` adds the freshness poller as a thread of the generator's
process, where `make bench` ran it until it got a process of its own (freshness_process.py): to measure
what it cost there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis
import requests

from tracehop.bench import procs
from tracehop.bench.load import BenchRequest, BuiltinLoad, ResponseHook, UserMix
from tracehop.bench.queue import wait_for_drain
from tracehop.bench.runner import MODE_ENV, freshness_sampler
from tracehop.bench.spans import FreshnessTracker, TraceStoreReader, learn_shape
from tracehop.bench.stats import percentile
from tracehop.bench.tail_events import (
    ClientRequest,
    ProcessEvents,
    break_down,
    read_events,
    store_posts,
    summarise_breakdowns,
    summarise_served,
)
from tracehop.stack.config import free_stack_ports
from tracehop.stack.runner import LocalStack
from tracehop.traces.query import TraceQuery

PROBE_DIR = Path(__file__).with_name("tail_probe")


@dataclass
class Stack:
    name: str
    stack: LocalStack
    probe_dir: Path
    groups: dict[str, tuple[int, ...]]
    redis: redis.Redis
    traced: bool
    create_spans: int = 0  # spans of a POST /api/users trace, learnt in the warm-up (traced stacks)


@dataclass
class Window:
    name: str
    start_ns: int
    end_ns: int
    requests: list[ClientRequest]
    cpu_s: dict[str, float]
    loadavg: tuple[float, float, float]
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def start_stack(name: str, base_mode: str, extra_env: dict[str, str], root: Path) -> Stack:
    probe_dir = root / name / "probe"
    probe_dir.mkdir(parents=True)
    probe = {"PYTHONPATH": str(PROBE_DIR), "TRACEHOP_TAIL_PROBE_DIR": str(probe_dir)}
    env = {**MODE_ENV[base_mode], **extra_env, **probe}
    stack = LocalStack(
        root / name / "var",
        root / name / "logs",
        free_stack_ports(),
        env,
        prometheus=False,
        beat=False,
        # The trace store gets supervisord's environment, not the services': the probe (and the
        # variant's settings, for the store) go there too.
        inherited_env={**os.environ, **extra_env, **probe},
    )
    stack.start(timeout=120)
    groups = procs.service_groups({status.component: status.pid for status in stack.status()})
    traced = env.get("OTEL_SDK_DISABLED", "false").lower() != "true"
    return Stack(name, stack, probe_dir, groups, redis.Redis.from_url(stack.urls["redis"]), traced)


def warm_up(stack: Stack, mix: UserMix) -> None:
    session = requests.Session()
    session.trust_env = False
    trace_id = None
    for index in range(mix.max_user_id):
        body = {"name": "Tail Seed", "email": f"seed-{index}@example.org"}
        response = session.post(f"{stack.stack.urls['gateway']}/api/users", json=body, timeout=10)
        response.raise_for_status()
        trace_id = response.json().get("trace_id")
    if stack.traced and trace_id:
        stack.create_spans = learn_shape(TraceQuery(stack.stack.urls["query"]), trace_id).spans
    BuiltinLoad(stack.stack.urls["gateway"], mix, 3.0, connections=4).run()
    wait_for_drain(stack.redis, time.monotonic(), 45)


def thread_runq_ns() -> int:
    """The calling thread's time waiting for a CPU so far (/proc schedstat, second field)."""
    with open("/proc/thread-self/schedstat", "rb") as file:
        return int(file.read().split()[1])


@dataclass(frozen=True)
class TaggedMix(UserMix):
    """The bench's mix, each request tagged `?tail=<serial>` so the gateway's record of it can be found,
    and its send time and the sending thread's run-queue wait noted when the generator sends it."""

    sent: dict[int, tuple[int, int]] = field(default_factory=dict, compare=False)

    def next_request(self, rng: random.Random, serial: int) -> BenchRequest:
        request = super().next_request(rng, serial)
        self.sent[serial] = (time.time_ns(), thread_runq_ns())  # the generator sends it right after this
        return replace(request, path=f"{request.path}?tail={serial}")


def fixed_rate(
    base_url: str, mix: UserMix, rate: float, duration_s: float, hook: ResponseHook | None = None
) -> tuple[list[ClientRequest], int]:
    """The bench's open-loop generator (latency counts from when a request was due), keeping each
    request's due, send and answer times on the wall clock so they can be matched against the
    processes' events."""
    tagged = TaggedMix(mix.post_share, mix.max_user_id)
    records: list[ClientRequest] = []  # list.append is atomic: the generator's threads share it

    def record(request: BenchRequest, status: int, body: bytes, at: float, latency_s: float) -> None:
        serial = int(request.path.rsplit("tail=", 1)[1])
        sent, runq = tagged.sent[serial]
        answered = int(at * 1e9)
        records.append(
            ClientRequest(
                serial, request.kind, answered - int(latency_s * 1e9), sent, answered, thread_runq_ns() - runq
            )
        )
        if hook is not None:
            hook(request, status, body, at, latency_s)

    result = BuiltinLoad(base_url, tagged, duration_s, connections=8, rate=rate, on_response=record).run()
    return records, result.errors


class TimedFreshnessTracker(FreshnessTracker):
    """The bench's freshness poller, with what it costs the generator's process: its thread's CPU, and
    the longest it ran for one SQLite poll and for one confirmation through the query API (CPU held in
    the process whose threads time the requests)."""

    cpu_ns = polls = confirms = 0
    poll_max_ns = confirm_max_ns = 0

    def _run(self) -> None:
        started = time.thread_time_ns()
        span_counts = self._reader.span_counts

        def timed_counts(trace_ids: Any) -> dict[str, int]:
            before = time.thread_time_ns()
            try:
                return span_counts(trace_ids)
            finally:
                self.polls += 1
                self.poll_max_ns = max(self.poll_max_ns, time.thread_time_ns() - before)

        self._reader.span_counts = timed_counts  # type: ignore[method-assign]
        try:
            super()._run()
        finally:
            self.cpu_ns = time.thread_time_ns() - started

    def _confirm(self, trace_id: str) -> bool:
        before = time.thread_time_ns()
        try:
            return super()._confirm(trace_id)
        finally:
            self.confirms += 1
            self.confirm_max_ns = max(self.confirm_max_ns, time.thread_time_ns() - before)

    def costs(self) -> dict[str, Any]:
        return {
            "thread_cpu_ms": round(self.cpu_ns / 1e6, 1),
            "polls": self.polls,
            "poll_cpu_ms_max": round(self.poll_max_ns / 1e6, 3),
            "confirms": self.confirms,
            "confirm_cpu_ms_max": round(self.confirm_max_ns / 1e6, 3),
        }


def measure(stack: Stack, mix: UserMix, rate: float, duration_s: float, freshness: bool) -> Window:
    tracker = None
    if freshness and stack.traced:
        # As `make bench` did in its traced fixed-rate windows until the poller got a process of its own:
        # one POST in ten timed until its trace is queryable, by a thread of this (the generator's) process.
        reader = TraceStoreReader(stack.stack.layout.traces_db)
        query = TraceQuery(stack.stack.urls["query"])
        tracker = TimedFreshnessTracker(reader, query, stack.create_spans).start()
    hook = freshness_sampler(tracker, 10) if tracker is not None else None
    before = procs.snapshot(stack.groups)
    start_ns = time.time_ns()
    records, errors = fixed_rate(stack.stack.urls["gateway"], mix, rate, duration_s, hook)
    end_ns = time.time_ns()
    extra = {}
    if tracker is not None:
        extra["freshness"] = tracker.finish().as_dict() | {"poller": tracker.costs()}
    wait_for_drain(stack.redis, time.monotonic(), 45)
    time.sleep(1.5)  # the last batch of spans exported, so its CPU counts in this window
    after = procs.snapshot(stack.groups)
    cpu = {name: procs.usage_between(before.get(name, {}), after[name]).cpu_s for name in after}
    return Window(stack.name, start_ns, end_ns, records, cpu, procs.load_average(), errors, extra)


# ---------------------------------------------------------------------------------------- the events


def _overlaps(intervals: list[tuple[int, int]], start: int, end: int) -> bool:
    return any(s < end and s + d > start for s, d in intervals)


def analyse(window: Window, processes: list[ProcessEvents]) -> dict[str, Any]:
    lo, hi = window.start_ns, window.end_ns + 2 * 10**9
    requests_n = len(window.requests)
    per_1000 = 1000 / max(1, requests_n)
    services: dict[str, Any] = {}
    stalls: dict[str, list[tuple[int, int]]] = defaultdict(list)  # what can hold up a request
    for service in ("gateway", "users", "worker"):
        mine = [p for p in processes if p.service == service]
        gcs = [g for p in mine for g in p.gcs if lo <= g[0] < hi]
        exports = [e for p in mine for e in p.exports if lo <= e[0] < hi]
        by_gen = {gen: [g for g in gcs if g[3] == gen] for gen in (0, 1, 2)}
        record: dict[str, Any] = {
            "cpu_ms_per_req": round(window.cpu_s.get(service, 0) / max(1, requests_n) * 1000, 3)
        }
        for gen, items in by_gen.items():
            cpus = sorted(g[2] / 1e6 for g in items)
            record[f"gen{gen}"] = {
                "per_1000_req": round(len(items) * per_1000, 1),
                "cpu_ms_per_1000_req": round(sum(cpus) * per_1000, 2),
                "cpu_ms_p50": round(percentile(cpus, 50) or 0, 3),
                "cpu_ms_max": round(max(cpus, default=0), 3),
                "wall_ms_max": round(max((g[1] / 1e6 for g in items), default=0), 3),
            }
        if exports:
            record["exports"] = {
                "per_1000_req": round(len(exports) * per_1000, 1),
                "spans": sum(e[3] for e in exports),
                "cpu_ms_per_1000_req": round(sum(e[2] for e in exports) / 1e6 * per_1000, 2),
                "cpu_ms_max": round(max(e[2] for e in exports) / 1e6, 3),
                "wall_ms_max": round(max(e[1] for e in exports) / 1e6, 3),
                "longest_stretch_ms_max": round(max(e[4] for e in exports) / 1e6, 3),
            }
        services[service] = record
        if service != "worker":
            stalls[f"{service} gen2"] += [(g[0], g[1]) for g in by_gen[2]]
            stalls[f"{service} gc>=1ms"] += [(g[0], g[1]) for g in gcs if g[1] >= 10**6]
            stalls[f"{service} export"] += [(e[0], e[1]) for e in exports]
    posts = store_posts(processes, lo, hi)
    services["trace store"] = {
        "cpu_ms_per_req": round(window.cpu_s.get("trace-store", 0) / max(1, requests_n) * 1000, 3),
        "posts": summarise_served(posts, requests_n),
        # The query API's requests: in these windows, the freshness poller's confirmations.
        "queries": summarise_served(
            [r for p in processes if p.is_store for r in p.requests if lo <= r.start < hi], requests_n
        ),
    }
    stalls["store POST"] = [(post.start, post.wall) for post in posts]
    stalls["store POST cpu>=4ms"] = [(post.start, post.wall) for post in posts if post.cpu >= 4 * 10**6]
    lifetimes = [(r.due, r.latency) for r in window.requests]  # each request from when it was due
    latencies = sorted(latency for _, latency in lifetimes)
    cut = latencies[int(len(latencies) * 0.99)] if latencies else 0
    slow = [(due, latency) for due, latency in lifetimes if latency >= cut]

    def share(intervals: list[tuple[int, int]], of: list[tuple[int, int]]) -> float:
        """The share of the requests `of` that overlapped one of `intervals`."""
        overlapped = sum(_overlaps(intervals, due, due + latency) for due, latency in of)
        return round(overlapped / max(1, len(of)), 3)

    overlap = {
        name: {"all": share(intervals, lifetimes), "slowest_1pct": share(intervals, slow)}
        for name, intervals in stalls.items()
    }
    ms = [latency / 1e6 for latency in latencies]
    return {
        "window": window.name,
        "requests": requests_n,
        "errors": window.errors,
        "p50_ms": round(percentile(ms, 50) or 0, 2),
        "p99_ms": round(percentile(ms, 99) or 0, 2),
        "max_ms": round(max(ms, default=0), 2),
        "loadavg": window.loadavg,
        "cpu_ms_per_req": {k: round(v * 1000 / max(1, requests_n), 3) for k, v in window.cpu_s.items()},
        "services": services,
        "slowest_1pct_overlap": overlap,
        "where_the_time_went": summarise_breakdowns(break_down(window.requests, processes)),
        **window.extra,
    }


def parse_variant(text: str) -> tuple[str, str, dict[str, str]]:
    """name[=base]:VAR=VALUE,VAR=VALUE  (base defaults to tracehop; `untraced` and `stock` are bases too)."""
    head, _, assignments = text.partition(":")
    name, _, base = head.partition("=")
    env = dict(item.split("=", 1) for item in assignments.split(",") if item)
    return name, base or ("untraced" if name == "untraced" else "tracehop"), env


def write_output(path: Path, variants: list[Any], freshness: bool, results: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"variants": [list(v) for v in variants], "freshness_poller": freshness, "windows": results}
    path.write_text(json.dumps(document, indent=1))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", default=[], help="name[=base]:VAR=VALUE,… (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--output", type=Path, default=Path("bench/runs/tail.json"))
    parser.add_argument("--root", type=Path, default=None, help="where the stacks live (default: a temp dir)")
    parser.add_argument(
        "--freshness",
        action="store_true",
        help="run the freshness poller in traced windows, as a thread of this process (as make bench did)",
    )
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in (args.variant or ["untraced", "tracehop"])]
    root = args.root or Path(os.environ.get("TMPDIR", "/tmp")) / f"tracehop-tail-{os.getpid()}"
    mix = UserMix()
    stacks: list[Stack] = []
    results: list[dict[str, Any]] = []
    try:
        for name, base, env in variants:
            print(f"starting {name} ({base}, {env})", flush=True)
            stacks.append(start_stack(name, base, env, root))
        for stack in stacks:
            warm_up(stack, mix)
        for round_number in range(args.rounds):
            order = stacks if round_number % 2 == 0 else stacks[::-1]
            for stack in order:
                window = measure(stack, mix, args.rate, args.duration, args.freshness)
                results.append(analyse(window, read_events(stack.probe_dir)))
                brief = results[-1]
                print(
                    json.dumps(
                        {k: brief[k] for k in ("window", "p50_ms", "p99_ms", "max_ms", "loadavg")}
                        | {"slowest_minus_middle": brief["where_the_time_went"].get("slowest_minus_middle")}
                    ),
                    flush=True,
                )
                # After every window: a run stopped early (a busy machine stretches windows) keeps its data.
                write_output(args.output, variants, args.freshness, results)
    finally:
        for stack in stacks:
            stack.stack.stop()
    write_output(args.output, variants, args.freshness, results)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
