"""Measure how soon a restarted trace store answers its query API, alone and under a backlog of exports.

    python -m tools.store_restart [--spans 100000] [--exporters 6] [--batches 4] [--rounds 3] [--out FILE]

Each round starts the store exactly as supervisord does (`python -m tracehop trace-store ...`) on a copy of
a database already holding `--spans` spans (a `make chaos` run holds about 100 000), and measures from the
moment the process is started:
- `first_answer_s`: the first 200 from `GET /api/v3/services` (the readiness probe's request), polled
  every 20 ms, each poll on a new connection as the probe makes it;
- with a backlog: `--exporters` threads stand for the stack's processes that queued spans while the store
  was down; each waits for the OTLP port to accept, then sends its `--batches` batches of 512 spans at once
  through the SDK's OTLP/HTTP exporter wrapped in the services' RetryingSpanExporter (what they really
  run). Meanwhile queries keep going: `query_max_s` is the slowest answer while the backlog was being
  written, and every exported span is looked up in the database afterwards (`spans_lost`).
- `cpu_to_first_answer_s`: the store process's CPU time (user + system, /proc) at its first answer.
Wall-clock times on a loaded machine move a lot: the load average is recorded with each round.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from services.metrics import proc_stat
from services.telemetry.export_retry import RetryingSpanExporter
from tracehop.stack.config import free_port
from tracehop.traces.store.database import SpanDatabase

REPO_ROOT = Path(__file__).resolve().parent.parent
BATCH = 512  # the batch processor's OTEL_BSP_MAX_EXPORT_BATCH_SIZE
SERVICES = ("gateway", "users", "worker")


# ------------------------------------------------------------------------------------------ the spans


def stack_like_spans(traces: int, seed: int = 0) -> list[ReadableSpan]:
    """`traces` traces shaped like a create: gateway SERVER/CLIENT/PRODUCER, users SERVER with a database
    span, worker CONSUMER with two steps; attributes as the instrumentations set them."""
    rng = random.Random(seed)
    exporter = InMemorySpanExporter()
    tracers = {}
    for service in SERVICES:
        provider = TracerProvider(resource=Resource.create({"service.name": service, "host.name": "bench"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers[service] = provider.get_tracer("tools.store_restart", "1.0")
    for number in range(traces):
        user_id = rng.randrange(1, 10**6)
        http = {"http.request.method": "POST", "url.scheme": "http", "server.port": 8080}
        with tracers["gateway"].start_as_current_span(
            "POST /api/users", kind=SpanKind.SERVER, attributes={**http, "http.route": "/api/users"}
        ) as root:
            root.set_attribute("http.response.status_code", 201)
            root.set_attribute("user.id", user_id)
            with tracers["gateway"].start_as_current_span("POST", kind=SpanKind.CLIENT, attributes=http):
                context = trace.set_span_in_context(trace.get_current_span())
                with (
                    tracers["users"].start_as_current_span(
                        "POST /users", context=context, kind=SpanKind.SERVER, attributes=http
                    ),
                    tracers["users"].start_as_current_span(
                        "UserStore.create", attributes={"db.system": "redis", "db.operation": "EVALSHA"}
                    ),
                ):
                    pass
            with tracers["gateway"].start_as_current_span(
                "apply_async/send_welcome_email", kind=SpanKind.PRODUCER, attributes={"job.id": str(number)}
            ):
                context = trace.set_span_in_context(trace.get_current_span())
                with tracers["worker"].start_as_current_span(
                    "run/send_welcome_email", context=context, kind=SpanKind.CONSUMER
                ) as consumer:
                    consumer.add_event("welcome e-mail delivered", {"user.id": user_id})
                    for step in range(2):
                        with tracers["worker"].start_as_current_span(
                            "send_welcome_email.step", attributes={"step": step}
                        ) as child:
                            if rng.random() < 0.02:
                                child.set_status(Status(StatusCode.ERROR, "421 try again later"))
    return list(exporter.get_finished_spans())


def batches(spans: list[ReadableSpan]) -> Iterator[list[ReadableSpan]]:
    for start in range(0, len(spans), BATCH):
        yield spans[start : start + BATCH]


def prefilled_database(spans: int, cache_dir: Path) -> Path:
    """A database holding about `spans` spans, built once and kept in `cache_dir`."""
    path = cache_dir / f"prefill-{spans}.sqlite3"
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        database = SpanDatabase(partial)
        made = 0
        while made < spans:
            chunk = stack_like_spans(1000, seed=made)
            for batch in batches(chunk):
                database.insert(encode_spans(batch))
            made += len(chunk)
        database.close()
        partial.rename(path)
    return path


# ---------------------------------------------------------------------------------------- one round


@dataclass
class Round:
    backlog_spans: int
    load_average: float
    first_answer_s: float | None = None
    cpu_to_first_answer_s: float | None = None
    backlog_stored_s: float | None = None
    query_count: int = 0
    query_max_s: float = 0.0
    query_max_during_backlog_s: float = 0.0
    spans_lost: int = 0
    notes: list[str] = field(default_factory=list)


def _wait_for_port(port: int, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.005)


def run_round(
    database: Path, backlog: list[list[list[ReadableSpan]]], work_dir: Path, repo: Path = REPO_ROOT
) -> Round:
    db_copy = work_dir / "traces.sqlite3"
    shutil.copyfile(database, db_copy)
    otlp_port, query_port = free_port(), free_port()
    result = Round(sum(len(b) for batches_ in backlog for b in batches_), os.getloadavg()[0])
    command = [sys.executable, "-m", "tracehop", "trace-store", "--otlp-port", str(otlp_port)]
    command += ["--query-port", str(query_port), "--db", str(db_copy), "--log-dir", str(work_dir)]
    stop = threading.Event()
    exported = threading.Event()
    failures: list[str] = []

    def export(batches_: list[list[ReadableSpan]]) -> None:
        _wait_for_port(otlp_port, stop)
        exporter = RetryingSpanExporter(
            OTLPSpanExporter(endpoint=f"http://127.0.0.1:{otlp_port}/v1/traces", timeout=10), budget_s=60
        )
        for batch in batches_:
            if exporter.export(batch) is not SpanExportResult.SUCCESS:
                failures.append("an export failed for 60 s")

    started = time.monotonic()
    process = subprocess.Popen(command, cwd=repo, stderr=subprocess.DEVNULL)
    exporters = [threading.Thread(target=export, args=(b,)) for b in backlog]
    for thread in exporters:
        thread.start()

    def watch_exporters() -> None:
        for thread in exporters:
            thread.join()
        result.backlog_stored_s = time.monotonic() - started
        exported.set()

    threading.Thread(target=watch_exporters, daemon=True).start()
    session = requests.Session()
    session.trust_env = False
    url = f"http://127.0.0.1:{query_port}/api/v3/services"
    try:
        deadline = started + 60
        while time.monotonic() < deadline and (result.first_answer_s is None or not exported.is_set()):
            asked = time.monotonic()
            try:
                # A new connection each time, as the readiness probe makes it.
                ok = requests.get(url, timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            answered = time.monotonic()
            if ok and result.first_answer_s is None:
                result.first_answer_s = answered - started
                result.cpu_to_first_answer_s = proc_stat.cpu_seconds(process.pid)
            elif ok:
                result.query_count += 1
                result.query_max_s = max(result.query_max_s, answered - asked)
                if not exported.is_set():
                    slowest = result.query_max_during_backlog_s
                    result.query_max_during_backlog_s = max(slowest, answered - asked)
            time.sleep(0.02)
        if not exported.wait(max(0.0, deadline - time.monotonic())):
            result.notes.append("backlog not stored within 60 s")
    finally:
        stop.set()
        process.kill()
        process.wait()
    result.notes.extend(failures)
    result.spans_lost = _missing_spans(db_copy, [s for b in backlog for batch in b for s in batch])
    return result


def _missing_spans(database: Path, spans: list[ReadableSpan]) -> int:
    wanted = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}") for s in spans}
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TEMP TABLE wanted (trace_id TEXT, span_id TEXT)")
        connection.executemany("INSERT INTO wanted VALUES (?, ?)", wanted)
        (found,) = connection.execute(
            "SELECT COUNT(*) FROM wanted JOIN spans USING (trace_id, span_id)"
        ).fetchone()
    return len(wanted) - found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000, help="spans already in the database")
    parser.add_argument("--exporters", type=int, default=6, help="processes sending a backlog at once")
    parser.add_argument("--batches", type=int, default=4, help="batches of 512 spans each one sends")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the rounds as JSON")
    parser.add_argument(
        "--before",
        type=Path,
        help="a checkout of the code before (e.g. `git archive main | tar -x -C DIR`): each round then runs "
        "its store too, right after this one's, on the same database and backlog",
    )
    args = parser.parse_args()
    cache = REPO_ROOT / "var" / "store_restart"
    cache.mkdir(parents=True, exist_ok=True)
    database = prefilled_database(args.spans, cache)
    spans = stack_like_spans(args.exporters * args.batches * BATCH // 8 + 1, seed=random.randrange(10**9))
    chunks = list(batches(spans))
    backlog = [chunks[i :: args.exporters][: args.batches] for i in range(args.exporters)]
    rounds = []
    code = {"after": REPO_ROOT, **({"before": args.before.resolve()} if args.before else {})}
    for number in range(args.rounds):
        for label, load in (("alone", []), ("backlog", backlog)):
            for version, repo in code.items():
                with tempfile.TemporaryDirectory() as work_dir:
                    result = run_round(database, load, Path(work_dir), repo)
                rounds.append({"round": number, "case": label, "code": version, **asdict(result)})
                print(json.dumps(rounds[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps({"spans_in_database": args.spans, "rounds": rounds}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
