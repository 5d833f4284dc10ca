"""`make bench`: what tracing costs, measured on one machine in one run.

    python -m tracehop.bench                               # 5 rounds x 3 modes: about 16 minutes
    BENCH_ROUNDS=1 BENCH_DURATION=5 python -m tracehop.bench   # a quick look (1-2 minutes)
    python -m tracehop.bench --profile bench/profiles       # py-spy profiles instead of numbers

One private embedded stack per mode, on free ports in a temporary directory (Prometheus off):
`untraced` (OTEL_SDK_DISABLED=true: the services install no instrumentation at all, a true baseline),
`stock` (OpenTelemetry's documented setup: the SDK's OTLP/protobuf exporter and batch processor at their
defaults, the stock instrumentations at theirs, none of tracehop's additions) and `tracehop` (our setup as
shipped). BENCH_MODES picks the modes. All stacks run for the whole bench; each round measures every mode,
in alternating order (ABC, CBA, ...), because the machine's speed drifts (design/benchmark-notes.md).

Each mode, each round: a saturation window (wrk when installed, else the built-in generator), the time
the worker needs to drain the queued jobs, then a window at a fixed 100 req/s (always the built-in
generator: Debian's wrk has no fixed-rate mode), during which sampled traces are timed until complete.
A CPU probe runs throughout; /proc gives each component's CPU and memory. Results: a table on the
terminal and bench/results.json (fields in report.py, explained in docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import redis
import requests
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tracehop.bench import procs
from tracehop.bench.freshness_process import FreshnessProcess
from tracehop.bench.load import BenchRequest, BuiltinLoad, LoadResult, ResponseHook, TrivialServer, UserMix
from tracehop.bench.probe import CpuProbe
from tracehop.bench.queue import DrainResult, wait_for_drain
from tracehop.bench.report import (
    BASELINE,
    FIXED_RATE,
    MODES,
    SATURATION,
    STOCK,
    TRACEHOP,
    results_table,
    summarise,
    targets_table,
    validate_results,
)
from tracehop.bench.spans import (
    FreshnessResult,
    FreshnessTracker,
    SpanAccount,
    TraceShape,
    TraceStoreReader,
    account_spans,
    learn_shape,
)
from tracehop.bench.wrk import WrkLoad, wrk_binary, wrk_version
from tracehop.stack.config import free_stack_ports
from tracehop.stack.runner import LocalStack
from tracehop.traces.query import TraceQuery
from tracehop.traffic import wait_for_job

DEFAULT_OUTPUT = Path("bench/results.json")
# Environment variables that change what is measured: recorded with the results.
RECORDED_ENV = (
    "GUNICORN_WORKERS",
    "GUNICORN_THREADS",
    "GUNICORN_KEEPALIVE",
    "TRACEHOP_WORKER_CONCURRENCY",
    "TRACEHOP_MAIL_LATENCY_MS",
    "TRACEHOP_LOG_LEVEL",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
)
# What each mode sets on its stack's services (on top of what the stack sets and the user's environment).
MODE_ENV = {
    BASELINE: {"OTEL_SDK_DISABLED": "true"},
    # The SDK's default batch delay (5 s): the stack runner's 1 s is a tracehop choice. Log lines as span
    # events are a tracehop addition too (services/telemetry/logs.py).
    STOCK: {
        "OTEL_SDK_DISABLED": "false",
        "TRACEHOP_TRACING_SETUP": "stock",
        "TRACEHOP_LOG_SPAN_EVENTS": "false",
        "OTEL_BSP_SCHEDULE_DELAY": os.environ.get("OTEL_BSP_SCHEDULE_DELAY") or "5000",
        # The instrumentations' default semantic conventions (the stack runner opts in to the stable ones).
        "OTEL_SEMCONV_STABILITY_OPT_IN": os.environ.get("OTEL_SEMCONV_STABILITY_OPT_IN", ""),
    },
    TRACEHOP: {"OTEL_SDK_DISABLED": "false", "TRACEHOP_TRACING_SETUP": "tracehop"},
}
# Root spans of the load run by the bench start within the window; a little slack for clock reads.
ROOT_MARGIN_NS = 500_000_000
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BenchSettings:
    rounds: int = 5  # per-round ratios range over ±0.1 here: five give a steadier median (issue 11)
    duration_s: float = 15.0
    rate: float = 100.0
    connections: int = 8
    post_share: float = 0.5
    seed_users: int = 20
    drain_timeout_s: float = 45.0
    loadgen: str = "auto"  # auto (wrk when installed), wrk, builtin: the saturation phase's generator
    freshness_every: int = 10  # time one POST /api/users in this many during the fixed-rate phase
    output: Path = DEFAULT_OUTPUT
    keep: bool = False  # keep the temporary stacks' logs and databases
    profile_dir: Path | None = None
    modes: tuple[str, ...] = MODES

    @property
    def sampling_ratio(self) -> float:
        """The share of traces the services' sampler keeps (OTEL_TRACES_SAMPLER[_ARG], as the SDK reads
        them); below 1, requests without a stored trace are unsampled, not dropped."""
        sampler = (os.environ.get("OTEL_TRACES_SAMPLER") or "parentbased_always_on").strip().lower()
        if sampler in ("traceidratio", "parentbased_traceidratio"):
            try:
                return min(1.0, max(0.0, float(os.environ.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)))
            except ValueError:
                return 1.0
        return 0.0 if sampler in ("always_off", "parentbased_always_off") else 1.0

    @property
    def mix(self) -> UserMix:
        return UserMix(post_share=self.post_share, max_user_id=self.seed_users)

    def saturation_generator(self) -> str:
        if self.loadgen == "auto":
            return "wrk" if wrk_binary() else "builtin"
        return self.loadgen

    def estimated_s(self) -> float:
        # Per mode and round: two windows, a drain and span settling; plus stack starts and warm-up.
        return self.rounds * len(self.modes) * (2 * self.duration_s + 12) + 40 * len(self.modes)


class Load(Protocol):
    def start(self) -> Load: ...
    def running(self) -> bool: ...
    @property
    def completed(self) -> int | None: ...
    def result(self) -> LoadResult: ...


@dataclass
class BenchStack:
    """One running stack of the bench and what the warm-up learnt about it."""

    mode: str
    stack: LocalStack
    redis: redis.Redis
    http: requests.Session
    reader: TraceStoreReader
    query: TraceQuery
    groups: dict[str, tuple[int, ...]] = field(default_factory=dict)  # service -> its process groups
    shapes: dict[str, TraceShape] = field(default_factory=dict)  # root span name -> shape
    kind_roots: dict[str, str] = field(default_factory=dict)  # "create"/"get" -> root span name

    @property
    def gateway(self) -> str:
        return self.stack.urls["gateway"]

    @property
    def traced(self) -> bool:
        return self.mode != BASELINE

    @property
    def settle_quiet_s(self) -> float:
        """How long no span may arrive before the stored spans count as complete: longer than the
        batch processor's delay, or a batch still waiting in a process would count as dropped."""
        delay_ms = float(self.stack.env.get("OTEL_BSP_SCHEDULE_DELAY") or 5000)
        return max(1.5, delay_ms / 1000 + 1.5)

    def wait_until_settled(self) -> bool:
        return self.reader.wait_until_settled(self.settle_quiet_s, timeout_s=30 + self.settle_quiet_s)


# ------------------------------------------------------------------------------------------ the stacks


def start_bench_stack(mode: str, root: Path) -> BenchStack:
    overrides = dict(MODE_ENV[mode])
    stack = LocalStack(
        root / mode / "var", root / mode / "logs", free_stack_ports(), overrides, prometheus=False
    )
    stack.start(timeout=START_TIMEOUT_S)
    http = requests.Session()
    http.trust_env = False  # loopback only, whatever proxy the environment names
    groups = procs.service_groups({status.component: status.pid for status in stack.status()})
    supervisord_pid = int(stack.layout.supervisord_pidfile.read_text().strip())
    groups["supervisord"] = (os.getpgid(supervisord_pid),)  # it daemonised: leader of its own group
    return BenchStack(
        mode=mode,
        stack=stack,
        redis=redis.Redis.from_url(stack.urls["redis"]),
        http=http,
        reader=TraceStoreReader(stack.layout.traces_db),
        query=TraceQuery(stack.urls["query"]),
        groups=groups,
    )


def warm_up(bench: BenchStack, settings: BenchSettings) -> None:
    """Create the users the GETs ask for, learn the traces' shapes, and run the code paths once."""
    created: dict[str, Any] = {}
    for index in range(settings.seed_users - 1):
        body = {"name": "Bench Seed", "email": f"seed-{index}@example.org"}
        response = bench.http.post(f"{bench.gateway}/api/users", json=body, timeout=10)
        response.raise_for_status()
        created = response.json()
    # The last seed user and the GET whose traces teach the shapes: sampled ones (with a ratio sampler
    # most are not; the traceresponse header's flags say which).
    created = _sampled_response(
        bench, "post", "/api/users", {"name": "Bench Seed", "email": "seed-last@example.org"}
    )
    if created["user"]["id"] < settings.seed_users:
        raise RuntimeError(f"expected a fresh users store, got user id {created['user']['id']}")
    fetched = _sampled_response(bench, "get", "/api/users/1")
    if wait_for_job(bench.http, bench.gateway, created["job_id"])["state"] != "SUCCESS":
        raise RuntimeError(f"warm-up job {created['job_id']} failed")
    if bench.traced:
        for kind, trace_id in (("create", created["trace_id"]), ("get", fetched["trace_id"])):
            # Settled: nothing new for longer than the batch delay (5 s in the stock mode).
            shape = learn_shape(bench.query, trace_id, bench.settle_quiet_s, 30 + bench.settle_quiet_s)
            bench.shapes[shape.root_name] = shape
            bench.kind_roots[kind] = shape.root_name
    # A short untimed load: connection pools filled, every import done, caches warm.
    BuiltinLoad(bench.gateway, settings.mix, 2.0, connections=4).run()
    wait_for_drain(bench.redis, time.monotonic(), settings.drain_timeout_s)
    if bench.traced:
        bench.wait_until_settled()


def _sampled_response(bench: BenchStack, method: str, path: str, body: Any = None) -> dict[str, Any]:
    for attempt in range(500):
        if method == "post" and attempt:
            body = {**body, "email": f"seed-last-{attempt}@example.org"}
        response = bench.http.request(method, f"{bench.gateway}{path}", json=body, timeout=10)
        response.raise_for_status()
        flags = response.headers.get("traceresponse", "00-0-0-00").split("-")[-1]
        if not bench.traced or int(flags, 16) & 1:
            return response.json()
    raise RuntimeError(f"no sampled {method.upper()} {path} in 500 requests: is the sampler off?")


# ------------------------------------------------------------------------------------------ a window


@dataclass
class _Counters:
    """Machine-wide and per-process CPU counters read at one instant."""

    at: float
    wall_ns: int
    own: dict[str, dict[int, procs.ProcessSample]]
    other: dict[str, dict[int, procs.ProcessSample]]
    machine: procs.MachineCpu
    bench_cpu_s: float
    probe_cpu_s: float

    @classmethod
    def read(
        cls, bench: BenchStack, others: Sequence[BenchStack], probe: CpuProbe, with_pss: bool = False
    ) -> _Counters:
        probe_sample = procs.read_process(probe.pid) if probe.pid else None
        return cls(
            at=time.monotonic(),
            wall_ns=time.time_ns(),
            own=procs.snapshot(bench.groups, with_pss=with_pss),
            other={
                f"{other.mode}/{name}": samples
                for other in others
                for name, samples in procs.snapshot(other.groups).items()
            },
            machine=procs.machine_cpu(),
            bench_cpu_s=procs.own_cpu_s(),
            probe_cpu_s=probe_sample.cpu_s if probe_sample else 0.0,
        )


def _cpu_by_component(
    before: dict[str, dict[int, procs.ProcessSample]],
    after: dict[str, dict[int, procs.ProcessSample]],
) -> dict[str, float]:
    return {name: procs.usage_between(before.get(name, {}), after[name]).cpu_s for name in after}


def make_load(
    bench: BenchStack, settings: BenchSettings, phase: str, on_response: ResponseHook | None
) -> Load:
    if phase == FIXED_RATE:
        return BuiltinLoad(
            bench.gateway,
            settings.mix,
            settings.duration_s,
            connections=8,
            rate=settings.rate,
            on_response=on_response,
        )
    if settings.saturation_generator() == "wrk":
        return WrkLoad(bench.gateway, settings.mix, settings.duration_s, connections=settings.connections)
    return BuiltinLoad(bench.gateway, settings.mix, settings.duration_s, connections=settings.connections)


def freshness_sampler(tracker: FreshnessTracker | FreshnessProcess, every: int) -> ResponseHook:
    """A response hook handing one in `every` successful POST /api/users to the freshness tracker."""
    seen = iter(range(1, 2**62))

    def hook(request: BenchRequest, status: int, body: bytes, at: float, _latency_s: float) -> None:
        if request.kind != "create" or status != 201 or next(seen) % every:
            return
        trace_id = json.loads(body).get("trace_id")
        if trace_id:
            tracker.add(trace_id, at)

    return hook


def measure_window(
    bench: BenchStack,
    others: Sequence[BenchStack],
    phase: str,
    round_number: int,
    settings: BenchSettings,
    probe: CpuProbe,
    progress: BenchProgress,
) -> tuple[dict[str, Any], FreshnessResult | None]:
    tracker = None
    on_response = None
    # Every traced mode, so that the tracker's polling loads each alike (the target is tracehop's). Not
    # with a ratio sampler: most traces are not sampled, and the tracker cannot tell which.
    if phase == FIXED_RATE and bench.traced and settings.sampling_ratio >= 1:
        expected = bench.shapes[bench.kind_roots["create"]].spans
        # In a process of its own: it must not hold the interpreter lock of the threads that time the
        # requests (freshness_process.py).
        tracker = FreshnessProcess(bench.stack.layout.traces_db, bench.stack.urls["query"], expected).start()
        on_response = freshness_sampler(tracker, settings.freshness_every)
    load = make_load(bench, settings, phase, on_response)
    label = f"round {round_number}/{settings.rounds} · {bench.mode} · {phase.replace('_', ' ')}"

    tracker_cpu_before = tracker.cpu_s() if tracker is not None else 0.0
    before = _Counters.read(bench, others, probe)
    load.start()
    while load.running():
        progress.load_tick(label, time.monotonic() - before.at, settings.duration_s, load.completed)
        time.sleep(0.25)
    result = load.result()
    after = _Counters.read(bench, others, probe, with_pss=True)
    tracker_cpu_after = tracker.cpu_s() if tracker is not None else 0.0

    probe_cpu_ms, probe_wall_ms = probe.window(before.at, after.at)
    progress.status(label, "draining the job queue")
    drain = wait_for_drain(bench.redis, after.at, settings.drain_timeout_s)
    drained = procs.snapshot(bench.groups)

    spans: SpanAccount | None = None
    if bench.traced:
        progress.status(label, "waiting for the last spans")
        bench.wait_until_settled()
        roots = bench.reader.roots_between(
            before.wall_ns - ROOT_MARGIN_NS,
            after.wall_ns + ROOT_MARGIN_NS,
            bench.shapes[bench.kind_roots["create"]].root_service,
            bench.shapes,
        )
        answered = {bench.kind_roots["create"]: result.created, bench.kind_roots["get"]: result.fetched}
        spans = account_spans(
            roots,
            answered,
            bench.shapes,
            purged_jobs=drain.purged,
            every_request_sampled=settings.sampling_ratio >= 1,
        )
    freshness = tracker.finish() if tracker is not None else None

    record = window_record(bench, phase, round_number, result, before, after, drained, drain, spans)
    if tracker is not None:  # the poller's process: the bench's own CPU, not a neighbour's
        poller_cpu = tracker_cpu_after - tracker_cpu_before
        record["machine"]["freshness_poller_cpu_s"] = round(poller_cpu, 2)
        record["machine"]["foreign_cpu_s"] = round(
            max(0.0, record["machine"]["foreign_cpu_s"] - poller_cpu), 2
        )
    record["probe_cpu_ms"], record["probe_wall_ms"] = probe_cpu_ms, probe_wall_ms
    progress.window_done(label, record, freshness)
    return record, freshness


def window_record(
    bench: BenchStack,
    phase: str,
    round_number: int,
    result: LoadResult,
    before: _Counters,
    after: _Counters,
    drained: dict[str, dict[int, procs.ProcessSample]],
    drain: DrainResult,
    spans: SpanAccount | None,
) -> dict[str, Any]:
    services = {name: procs.usage_between(before.own[name], after.own[name]) for name in after.own}
    stack_cpu = sum(usage.cpu_s for usage in services.values())
    other_cpu = sum(_cpu_by_component(before.other, after.other).values())
    bench_cpu = after.bench_cpu_s - before.bench_cpu_s
    probe_cpu = after.probe_cpu_s - before.probe_cpu_s
    wrk_cpu = result.cpu_s if result.generator == "wrk" else 0.0
    busy = after.machine.busy_s - before.machine.busy_s
    elapsed = after.at - before.at
    return {
        "mode": bench.mode,
        "phase": phase,
        "round": round_number,
        "started_at": datetime.fromtimestamp(before.wall_ns / 1e9, UTC).isoformat(timespec="seconds"),
        "load": result.as_dict(),
        "services": {name: usage.as_dict() for name, usage in services.items()},
        "drain_cpu_s": {name: round(cpu, 3) for name, cpu in _cpu_by_component(after.own, drained).items()},
        "queue_drain_s": None if drain.drain_s is None else round(drain.drain_s, 3),
        "queue_left": drain.left,
        "queue_purged": drain.purged,
        "spans": spans.as_dict() if spans else None,
        "machine": {
            "elapsed_s": round(elapsed, 3),
            "load_avg_1m": procs.load_average()[0],
            "busy_cpu_s": round(busy, 2),
            "steal_s": round(after.machine.steal_s - before.machine.steal_s, 2),
            "this_stack_cpu_s": round(stack_cpu, 2),
            "idle_stack_cpu_s": round(other_cpu, 2),  # the other modes' stacks, idle meanwhile
            "bench_process_cpu_s": round(bench_cpu, 2),  # includes the built-in generator's threads
            "wrk_cpu_s": round(wrk_cpu, 2),
            "probe_cpu_s": round(probe_cpu, 2),
            # CPU used by processes that are not ours: other people's work on a shared machine.
            "foreign_cpu_s": round(
                max(0.0, busy - stack_cpu - other_cpu - bench_cpu - wrk_cpu - probe_cpu), 2
            ),
        },
    }


# ------------------------------------------------------------------------------------------ progress


class BenchProgress:
    """One live progress line (rich) and a short line per finished window."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("starting", total=1.0, info="")

    def __enter__(self) -> BenchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def status(self, description: str, info: str = "") -> None:
        self._progress.update(self._task, description=description, info=info, completed=0, total=None)

    def load_tick(self, label: str, elapsed: float, duration: float, completed: int | None) -> None:
        info = f"load avg {procs.load_average()[0]:.1f}"
        if completed is not None and elapsed > 0:
            info = f"{completed} answered, {completed / elapsed:.0f} req/s · {info}"
        self._progress.update(self._task, description=label, info=info, total=duration, completed=elapsed)

    def window_done(self, label: str, record: dict[str, Any], freshness: FreshnessResult | None) -> None:
        load = record["load"]
        parts = [
            f"{load['rps']:.0f} req/s",
            f"p95 {load['p95_ms']:.0f} ms" if load["p95_ms"] is not None else "p95 –",
            f"errors {load['errors']}",
            f"drain {record['queue_drain_s']:.1f} s"
            if record["queue_drain_s"] is not None
            else "not drained",
        ]
        if record["spans"]:
            parts.append(
                f"spans {record['spans']['spans_exported']} stored / {record['spans']['spans_dropped']} lost"
            )
        if freshness is not None and freshness.delays_s:
            parts.append(f"freshness p95 {freshness.as_dict()['p95_s']} s")
        probe = record.get("probe_cpu_ms")
        parts.append(f"probe {probe:.2f} ms" if probe else "probe –")
        parts.append(f"load avg {record['machine']['load_avg_1m']:.1f}")
        self.console.print(f"{label}: " + ", ".join(parts))


# ------------------------------------------------------------------------------------------ the run


def machine_description() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu_model": procs.cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_avg_start": procs.load_average(),
    }


def measure_ceilings(settings: BenchSettings) -> dict[str, Any]:
    """How fast the generators go against a server that does nothing: far above the stack's rate, or
    the bench would be measuring its own load generator."""
    ceilings: dict[str, Any] = {
        "saturation": wrk_version() if settings.saturation_generator() == "wrk" else "builtin",
        "fixed_rate": "builtin",
    }
    with TrivialServer() as server:
        builtin = BuiltinLoad(server.url, settings.mix, 3.0, connections=settings.connections).run()
        ceilings["builtin_ceiling_rps"] = round(builtin.requests / builtin.duration_s)
        ceilings["builtin_ceiling_cpu_s_per_s"] = round(builtin.cpu_s / builtin.duration_s, 2)
        if settings.saturation_generator() == "wrk":
            wrk = WrkLoad(server.url, settings.mix, 2.0, connections=settings.connections).run()
            ceilings["wrk_ceiling_rps"] = round(wrk.requests / wrk.duration_s)
    return ceilings


def run_rounds(
    benches: dict[str, BenchStack], settings: BenchSettings, probe: CpuProbe, progress: BenchProgress
) -> tuple[list[dict[str, Any]], dict[str, FreshnessResult]]:
    windows: list[dict[str, Any]] = []
    freshness = {mode: FreshnessResult() for mode, bench in benches.items() if bench.traced}
    for round_number in range(1, settings.rounds + 1):
        # ABC, CBA, ...: a drift of the machine's speed within the run hits every mode alike.
        order = settings.modes if round_number % 2 else tuple(reversed(settings.modes))
        for mode in order:
            others = [bench for name, bench in benches.items() if name != mode]
            for phase in (SATURATION, FIXED_RATE):
                record, sampled = measure_window(
                    benches[mode], others, phase, round_number, settings, probe, progress
                )
                windows.append(record)
                if sampled is not None:
                    freshness[mode] = freshness[mode].merge(sampled)
    return windows, freshness


def recorded_settings(settings: BenchSettings, benches: dict[str, BenchStack]) -> dict[str, Any]:
    values = {
        key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(settings).items()
    }
    values.pop("keep", None)
    values.pop("profile_dir", None)
    values["saturation_generator"] = settings.saturation_generator()
    values["modes"] = list(settings.modes)
    values["sampling_ratio"] = settings.sampling_ratio
    values["wrk_threads"] = 1
    reference = benches.get(TRACEHOP) or next(iter(benches.values()))
    stack_env = reference.stack.env
    values["env"] = {name: stack_env.get(name, os.environ.get(name)) for name in RECORDED_ENV}
    values["mode_env"] = {mode: MODE_ENV[mode] for mode in settings.modes}
    return values


def run_bench(settings: BenchSettings, console: Console) -> dict[str, Any]:
    # Decided once: wrk installed while the bench runs must not change the generator halfway.
    settings = replace(settings, loadgen=settings.saturation_generator())
    when = datetime.now(UTC).isoformat(timespec="seconds")
    machine = machine_description()
    console.print(
        f"[bold]tracehop bench[/]: {settings.rounds} round(s) x {len(settings.modes)} modes "
        f"({', '.join(settings.modes)}) x 2 windows of "
        f"{settings.duration_s:g} s, saturation by {settings.saturation_generator()}, fixed rate "
        f"{settings.rate:g} req/s; about {settings.estimated_s() / 60:.0f} min. Machine: {machine['cores']} "
        f"cores, {machine['cpu_model']}, load avg {machine['load_avg_start'][0]:.2f}."
    )
    root = Path(tempfile.mkdtemp(prefix="tracehop-bench-"))
    benches: dict[str, BenchStack] = {}
    failed = True
    try:
        with BenchProgress(console) as progress, CpuProbe() as probe:
            progress.status("measuring the load generators' ceiling")
            loadgen = measure_ceilings(settings)
            console.print(
                f"built-in generator ceiling: {loadgen['builtin_ceiling_rps']} req/s against a trivial server"
                + (f"; wrk: {loadgen['wrk_ceiling_rps']} req/s" if "wrk_ceiling_rps" in loadgen else "")
            )
            for mode in settings.modes:
                progress.status(f"starting the {mode} stack")
                benches[mode] = start_bench_stack(mode, root)
                progress.status(f"warming up the {mode} stack")
                warm_up(benches[mode], settings)
            shapes = same_trace_shapes(benches)
            console.print(
                "trace shapes learnt from warm-up requests: "
                + ", ".join(f"{name}: {shape['spans']} spans" for name, shape in shapes.items())
            )
            windows, freshness = run_rounds(benches, settings, probe, progress)
        machine["load_avg_end"] = procs.load_average()
        document = summarise(
            windows,
            when=when,
            machine=machine,
            settings=recorded_settings(settings, benches),
            loadgen=loadgen,
            freshness={mode: result.as_dict() for mode, result in freshness.items()},
            notes=result_notes(settings, shapes),
        )
        failed = False
        return document
    finally:
        for bench in benches.values():
            bench.reader.close()
            bench.stack.stop()
        if failed or settings.keep:
            console.print(f"stack files (logs, traces.sqlite3) kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def same_trace_shapes(benches: dict[str, BenchStack]) -> dict[str, Any]:
    """The traces' shapes, which must be the same in every traced mode: the modes may differ in what a
    span costs, never in which spans a request makes."""
    shapes_by_mode = {
        mode: {name: asdict(shape) for name, shape in bench.shapes.items()}
        for mode, bench in benches.items()
        if bench.traced
    }
    distinct = {json.dumps(shapes, sort_keys=True) for shapes in shapes_by_mode.values()}
    if len(distinct) > 1:
        raise RuntimeError(f"the traced modes make different traces: {shapes_by_mode}")
    return next(iter(shapes_by_mode.values()), {})


def result_notes(settings: BenchSettings, shapes: dict[str, Any]) -> list[str]:
    learnt = ", ".join(f"{name}: {shape['spans']}" for name, shape in shapes.items())
    return [
        "Preliminary: measured on a shared, noisy machine; see machine.load_avg_* and windows[].machine "
        "(foreign_cpu_s is CPU used by processes that are not the bench's).",
        "rps counts 2xx answers per second at saturation, normalised by the CPU probe "
        "(rps_raw is not normalised); CPU ms per request likewise (the *_raw fields are as measured); "
        "ranges are min-max over rounds.",
        "p50/p95/p99 at saturation are mostly queueing (closed loop); fixed_rate latencies count from when "
        "each request was due.",
        "spans_dropped is computed, not reported by the SDK (the services expose no such metric): "
        "expected spans per answered request, learnt from warm-up traces "
        f"({learnt}), minus spans stored.",
        "queue_drain_s (per mode) is the drain after the 100 req/s phase; saturation_queue_drain_s after "
        f"saturation (null if not drained within {settings.drain_timeout_s:g} s: the rest was purged).",
        "cpu_ms_per_req includes the CPU the component used while the queue drained after the window.",
        "The trace store runs on the same two cores: its CPU (services.trace-store) is part of the traced "
        "mode's cost here, but would not be with a remote collector.",
    ]


def write_results(document: dict[str, Any], path: Path) -> None:
    problems = validate_results(document)
    if problems:
        raise RuntimeError("the results document is incomplete: " + "; ".join(problems))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------ CLI


def _env_number(name: str, default: float, kind: Callable[[str], float] = float) -> Any:
    raw = os.environ.get(name, "").strip()
    try:
        return kind(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from None


def parse_args(argv: Sequence[str] | None = None) -> BenchSettings:
    defaults = BenchSettings()
    parser = argparse.ArgumentParser(prog="python -m tracehop.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=_env_number("BENCH_ROUNDS", defaults.rounds, int))
    parser.add_argument(
        "--duration",
        type=float,
        default=_env_number("BENCH_DURATION", defaults.duration_s),
        help="seconds per window",
    )
    parser.add_argument("--rate", type=float, default=_env_number("BENCH_RATE", defaults.rate))
    parser.add_argument(
        "--connections", type=int, default=_env_number("BENCH_CONNECTIONS", defaults.connections, int)
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=_env_number("BENCH_DRAIN_TIMEOUT", defaults.drain_timeout_s)
    )
    parser.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "builtin"),
        default=os.environ.get("BENCH_LOADGEN") or defaults.loadgen,
    )
    parser.add_argument(
        "--output", type=Path, default=Path(os.environ.get("BENCH_OUTPUT") or defaults.output)
    )
    parser.add_argument(
        "--modes",
        default=os.environ.get("BENCH_MODES") or ",".join(defaults.modes),
        help=f"comma-separated, from {', '.join(MODES)}; untraced and one traced mode at least",
    )
    parser.add_argument("--keep", action="store_true", help="keep the stacks' logs and trace databases")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="profile the services with py-spy instead of measuring"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.rate <= 0 or args.connections < 1:
        parser.error("rounds, duration, rate and connections must be positive")
    modes = tuple(mode for mode in MODES if mode in {m.strip() for m in args.modes.split(",")})
    unknown = {m.strip() for m in args.modes.split(",")} - set(MODES)
    if unknown or BASELINE not in modes or len(modes) < 2:
        parser.error(
            f"BENCH_MODES / --modes {args.modes!r}: use {', '.join(MODES)}, with untraced and at least "
            "one traced mode"
        )
    if args.loadgen == "wrk" and wrk_binary() is None:
        parser.error("--loadgen wrk: wrk is not installed (apt-get install wrk)")
    return replace(
        defaults,
        rounds=args.rounds,
        duration_s=args.duration,
        rate=args.rate,
        connections=args.connections,
        drain_timeout_s=args.drain_timeout,
        loadgen=args.loadgen,
        output=args.output,
        keep=args.keep,
        profile_dir=args.profile,
        modes=modes,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    # Piped into a log (make in CI, tee) the table keeps its shape instead of wrapping at 80 columns.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 170)
    if sys.platform != "linux":
        console.print("the bench reads /proc: it runs on Linux only")
        return 1
    try:
        if settings.profile_dir is not None:
            from tracehop.bench.profile import run_profile

            run_profile(settings, console)
            return 0
        document = run_bench(settings, console)
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    write_results(document, settings.output)
    console.print(results_table(document))
    console.print(targets_table(document))
    machine = document["machine"]
    console.print(
        f"machine: {machine['cores']} cores, {machine['cpu_model']}; load average "
        f"{machine['load_avg_start'][0]:.2f} at start, {machine['load_avg_end'][0]:.2f} at the end. "
        f"Results: {settings.output}"
    )
    return 0
