"""`python -m tracehop <command>`: the commands behind the Makefile's verbs.

Exit codes: 0 done, 1 failed (the message says why), 2 bad usage, 3 `status` of a stack that is not
running, 130 interrupted. Expected failures print one clear line, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from tracehop.stack.config import (
    StackConfigError,
    gateway_url_from_env,
    last_traffic_path,
    log_dir_from_env,
    parse_port,
    query_url_from_env,
    var_dir_from_env,
)

if TYPE_CHECKING:
    from rich.console import Console

# Each command imports what it needs when it runs, not this module: `python -m tracehop trace-store` is
# how supervisord restarts the trace store after a crash, and rich, requests, the stack runner and the
# traffic generator (0.3 s of CPU on a quiet machine, over 1 s on a loaded one) are none of its business.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3
EXIT_INTERRUPTED = 130

TRACE_ID_HELP = "32 hex digits, or a whole traceparent/traceresponse value (00-<trace id>-<span id>-<flags>)"

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0


def expected_errors() -> tuple[type[Exception], ...]:
    """Failures a user can cause or fix (stack not running, port taken, unknown trace...): one line, no
    traceback. Their modules are imported here, once something failed, not at every start."""
    import requests

    from tracehop.stack.compose import ComposeError
    from tracehop.stack.prometheus_config import PrometheusConfigError
    from tracehop.stack.runner import StackError
    from tracehop.traces.store.retention import RetentionError
    from tracehop.traces.trace_id import InvalidTraceId
    from tracehop.traces.view import TraceViewError
    from tracehop.traffic import TrafficError

    return (
        StackError,
        StackConfigError,
        ComposeError,
        PrometheusConfigError,
        TrafficError,
        TraceViewError,
        InvalidTraceId,
        RetentionError,
        requests.RequestException,
    )


@functools.cache
def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) rich consoles, made at their first use."""
    from tracehop.console import make_console

    return make_console(), make_console(stderr=True)


# -------------------------------------------------------------------------------------------- stack


def cmd_up(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from tracehop.console import print_table
    from tracehop.stack import compose
    from tracehop.stack.runner import LocalStack, StackStartError
    from tracehop.stack.view import (
        NEXT_STEPS,
        components_table,
        failure_panel,
        published_ports_table,
        start_progress,
        urls_table,
    )

    out, err = consoles()
    if compose.wants_compose():
        out.print("A Docker engine answers: starting the full stack with [bold]docker compose[/].")
        started = time.monotonic()
        new_password = compose.compose_up()
        out.print(f"docker compose stack ready in {time.monotonic() - started:.1f}s")
        if new_password:
            out.print(f"Grafana admin password (saved in .env.local, shown once): [bold]{new_password}[/]")
        print_table(out, published_ports_table(compose.published_ports(compose.compose_ps())))
        out.print(NEXT_STEPS)
        return EXIT_OK

    stack = LocalStack.from_env()
    if stack.is_running():
        out.print(f"The local stack is already running (state in {stack.layout.var_dir}): nothing started.")
        print_table(out, components_table(stack.status()))
        return EXIT_OK
    if not stack.runs_prometheus:
        out.print("[yellow]prometheus: skipped[/] (no `prometheus` binary on PATH; metrics stay on /metrics)")
    if not stack.embeds_redis:
        out.print(f"redis: using REDIS_URL={_hide_password(stack.redis_url)} (no embedded server)")
    stack.check_ports_free()
    out.print(f"Starting the local stack (no Docker engine found; state in {stack.layout.var_dir})")
    started = time.monotonic()
    try:
        # The display closes before anything is stopped, so its clocks end at the failure.
        with start_progress(out, stack.components, args.timeout) as on_ready:
            stack.start(timeout=args.timeout, on_ready=on_ready, stop_on_failure=False)
    except StackStartError as error:
        err.print(f"[red]error:[/] {escape(str(error))}")
        if error.component:
            source = stack.layout.program_output(error.component)
            err.print(failure_panel(f"last lines of {source}", error.output_tail))
        err.print("Stopping what was started...")
        stack.stop()
        err.print(f"Stopped. The outputs stay in {stack.layout.var_dir}/*.out and {stack.layout.log_dir}/.")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print("interrupted: stopping what was started...")
        stack.stop()
        return EXIT_INTERRUPTED
    out.print(f"[green]local stack ready in {time.monotonic() - started:.1f}s[/]")
    print_table(out, components_table(stack.status()))
    print_table(out, urls_table({key: _hide_password(url) for key, url in stack.urls.items()}))
    out.print(NEXT_STEPS)
    return EXIT_OK


def cmd_down(args: argparse.Namespace) -> int:
    from tracehop.stack import compose
    from tracehop.stack.runner import LocalStack

    out, err = consoles()
    if compose.wants_compose():
        compose.compose_down()
        out.print("docker compose stack stopped.")
    stack = LocalStack.from_env()
    report = stack.stop(timeout=args.timeout)
    if report is None:
        out.print("local stack: not running (nothing to stop).")
        return EXIT_OK
    out.print(f"local stack stopped: {', '.join(report.stopped) or 'supervisord'}.")
    for program, pids in report.killed_groups.items():
        err.print(f"[yellow]warning:[/] {program} left processes {pids} behind; they were killed.")
    out.print("No process of the stack is left.")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from tracehop.console import print_table
    from tracehop.stack import compose
    from tracehop.stack.runner import LocalStack
    from tracehop.stack.view import components_table, published_ports_table

    out, err = consoles()
    if compose.wants_compose():
        print_table(out, published_ports_table(compose.published_ports(compose.compose_ps())))
        return EXIT_OK
    stack = LocalStack.from_env()
    statuses = stack.status()
    if not statuses:
        out.print("local stack: not running (start it with `make up`).")
        return EXIT_NOT_RUNNING
    print_table(out, components_table(statuses))
    unready = [status.component for status in statuses if not status.ready]
    if unready:
        err.print(f"[red]not ready:[/] {', '.join(unready)} (see {stack.layout.var_dir}/<name>.out)")
        return EXIT_FAILED
    return EXIT_OK


def cmd_urls(args: argparse.Namespace) -> int:
    from tracehop.console import print_table
    from tracehop.stack import compose
    from tracehop.stack.runner import LocalStack
    from tracehop.stack.view import published_ports_table, urls_table

    out, _ = consoles()
    if compose.wants_compose():
        print_table(out, published_ports_table(compose.published_ports(compose.compose_ps())))
        return EXIT_OK
    stack = LocalStack.from_env()
    running = stack.is_running()
    urls = stack.urls
    if stack.embeds_redis and not running and stack.remembered_redis_port() is None:
        urls["redis"] = "redis://127.0.0.1:<a free port, chosen at the first `up`>/0"
    state = "running" if running else "not running"
    shown = {key: _hide_password(url) for key, url in urls.items()}
    print_table(out, urls_table(shown, title=f"URLs ({state})"))
    return EXIT_OK


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


# ------------------------------------------------------------------------------------------ traces


def cmd_traffic(args: argparse.Namespace) -> int:
    from tracehop.console import print_table
    from tracehop.traffic import run_fault_traffic, run_traffic, save_traffic, traffic_table

    out, err = consoles()
    base_url = (args.base_url or gateway_url_from_env()).rstrip("/")
    if args.faults:
        records = run_fault_traffic(base_url, out, seed=args.seed)
    else:
        records = run_traffic(base_url, args.count, out, seed=args.seed)
    print_table(out, traffic_table(records))
    last_traffic = last_traffic_path()
    save_traffic(last_traffic, base_url, records)
    out.print(f"trace ids saved to {last_traffic}; [bold]make trace[/] shows the latest POST /api/users.")
    unexpected = [record for record in records if not record.as_expected]
    if unexpected:
        err.print(f"[red]{len(unexpected)} response(s) were not what a healthy stack answers[/] (red above).")
        if args.faults:
            err.print("Fault flags apply only where TRACEHOP_FAULT_INJECTION=1 (`make up` sets it).")
        return EXIT_FAILED
    return EXIT_OK


def cmd_trace(args: argparse.Namespace) -> int:
    from tracehop.traces.query import TraceQuery
    from tracehop.traces.trace_id import normalise_trace_id
    from tracehop.traces.view import latest_trace_id, show_trace
    from tracehop.traffic import latest_saved_create

    out, _ = consoles()
    query_url = (args.query_url or query_url_from_env()).rstrip("/")
    # No id: the latest POST /api/users in the trace store, so it works after a curl as after make traffic
    # (whose last create may not have reached the store yet: its saved run says which it was).
    if args.trace_id:
        trace_id = normalise_trace_id(args.trace_id)
    else:
        just_sent = latest_saved_create(last_traffic_path())
        trace_id = latest_trace_id(TraceQuery(query_url), just_sent=just_sent)
    show_trace(trace_id, query_url, out, timeout=args.wait, follow_links=not args.no_links)
    return EXIT_OK


def cmd_logs(args: argparse.Namespace) -> int:
    from tracehop.console import print_table
    from tracehop.traces.logs import logs_table, read_trace_logs
    from tracehop.traces.trace_id import normalise_trace_id

    out, err = consoles()
    trace_id = normalise_trace_id(args.trace_id)
    log_dir = Path(args.log_dir).absolute() if args.log_dir else log_dir_from_env()
    lines = read_trace_logs(log_dir, trace_id)
    if not lines:
        err.print(f"no log line with trace_id {trace_id} in {log_dir}/*.log")
        return EXIT_FAILED
    if args.json:
        # Plain stdout, not rich: the lines must stay byte-for-byte JSON for jq and friends.
        sys.stdout.write("".join(line.raw + "\n" for line in lines))
    else:
        print_table(out, logs_table(lines, trace_id))
    return EXIT_OK


def cmd_trace_store(args: argparse.Namespace) -> int:
    from tracehop.traces.store import server as trace_store
    from tracehop.traces.store.retention import retention_from_env

    db_path = Path(args.db) if args.db else var_dir_from_env() / "traces.sqlite3"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    log_dir = Path(args.log_dir).absolute() if args.log_dir else log_dir_from_env()
    retention = retention_from_env()
    with contextlib.suppress(KeyboardInterrupt):
        trace_store.run(
            args.otlp_port,
            args.query_port,
            db_path,
            host=args.host,
            log_dir=log_dir,
            prometheus_url=args.prometheus_url,
            retention=retention,
        )
    return EXIT_OK


# -------------------------------------------------------------------------------------------- parser


def _port_from_env(variable: str, default: int) -> int:
    raw = os.environ.get(variable, "").strip()
    return parse_port(raw, variable) if raw else default


def _port_argument(raw: str) -> int:
    try:
        return parse_port(raw, "port")
    except StackConfigError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tracehop",
        description="Run and inspect tracehop: one trace across Flask and Celery, with logs and metrics.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up", help="start the stack (docker compose if a Docker engine answers, else local)"
    )
    up.add_argument("--timeout", type=float, default=START_TIMEOUT, help="seconds to wait for readiness")
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="stop the stack and every process it started")
    down.add_argument("--timeout", type=float, default=STOP_TIMEOUT, help="seconds to wait for shutdown")
    down.set_defaults(handler=cmd_down)

    commands.add_parser("status", help="state, pid and readiness of each component").set_defaults(
        handler=cmd_status
    )
    commands.add_parser("urls", help="where each component listens").set_defaults(handler=cmd_urls)

    traffic = commands.add_parser("traffic", help="send a bounded mix of requests and print their trace ids")
    traffic.add_argument("--count", type=_positive_int, help="number of requests")
    traffic.add_argument("--base-url", help="gateway URL (default: $TRACEHOP_GATEWAY_URL or 127.0.0.1:$PORT)")
    traffic.add_argument("--seed", type=int, help="seed of the random names and ids (repeatable runs)")
    traffic.add_argument(
        "--faults",
        action="store_true",
        help="instead of the mix: a few requests with fault flags (baggage tracehop.fault), slow and failing",
    )
    traffic.set_defaults(handler=cmd_traffic)

    trace = commands.add_parser(
        "trace", help="draw one trace as a waterfall (default: the latest POST /api/users in the trace store)"
    )
    trace.add_argument("trace_id", nargs="?", metavar="TRACE_ID", help=TRACE_ID_HELP)
    trace.add_argument("--query-url", help="query API (default: $TRACEHOP_QUERY_URL or 127.0.0.1:$PORT)")
    trace.add_argument("--wait", type=float, help="seconds to wait for late spans")
    trace.add_argument(
        "--no-links", action="store_true", help="do not follow span links into the traces they connect"
    )
    trace.set_defaults(handler=cmd_trace)

    logs = commands.add_parser("logs", help="every log line of one trace, all services, in time order")
    logs.add_argument("trace_id", metavar="TRACE_ID", help=TRACE_ID_HELP)
    logs.add_argument("--json", action="store_true", help="print the raw JSON lines")
    logs.add_argument(
        "--log-dir", help="directory of <service>.log files (default: $TRACEHOP_LOG_DIR or logs)"
    )
    logs.set_defaults(handler=cmd_logs)

    store = commands.add_parser("trace-store", help="run the local trace store in the foreground")
    store.add_argument("--otlp-port", type=_port_argument, default=None, help="OTLP/HTTP receiver port")
    store.add_argument("--query-port", type=_port_argument, default=None, help="query API port")
    store.add_argument("--db", help="SQLite file (default: $TRACEHOP_VAR_DIR/traces.sqlite3)")
    store.add_argument("--host", default="127.0.0.1", help="address to bind")
    store.add_argument(
        "--log-dir",
        help="the services' <service>.log files the viewer shows (default: $TRACEHOP_LOG_DIR or logs)",
    )
    store.add_argument("--prometheus-url", help="the local Prometheus the viewer links to (default: none)")
    store.set_defaults(handler=cmd_trace_store)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    # Environment defaults are read here, not at parser build time, so a bad value is a clear error
    # of this command only.
    # Defaults that live in a command's own module, imported only when that command runs.
    if args.command == "traffic" and args.count is None:
        from tracehop.traffic import DEFAULT_COUNT

        args.count = DEFAULT_COUNT
    if args.command == "trace" and args.wait is None:
        from tracehop.traces.view import WAIT_SECONDS

        args.wait = WAIT_SECONDS
    if args.command == "trace-store":
        if args.otlp_port is None:
            args.otlp_port = _port_from_env("TRACEHOP_OTLP_PORT", 4318)
        if args.query_port is None:
            args.query_port = _port_from_env("TRACEHOP_QUERY_PORT", 16686)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except KeyboardInterrupt:
        consoles()[1].print("interrupted")
        return EXIT_INTERRUPTED
    except Exception as error:
        if not isinstance(error, expected_errors()):
            raise
        from rich.markup import escape

        consoles()[1].print(f"[red]error:[/] {escape(str(error))}")
        return EXIT_FAILED
