"""What the commands print on an 80-column terminal and into a pipe: nothing cut, nothing dropped.

On a terminal every line fits its width and every id, header and message is there whole (a long one may
wrap inside its column, never lose characters). Anywhere else the output is plain: no box drawing, one
whole line per row, however long. The last tests run the real CLI, once with its output on a pipe and once
on a pseudo-terminal of 80 columns.
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from rich.cells import cell_len
from rich.console import Console

from tests.conftest import REPO_ROOT
from tests.unit.test_trace_tree import contract_spans, make_span, shape
from tracehop.console import print_table
from tracehop.traces.logs import LogLine, logs_table, parse_timestamp
from tracehop.traces.store.server import RunningTraceStore, serve_in_thread
from tracehop.traces.tree import build_tree, parse_text
from tracehop.traces.waterfall import render_waterfall
from tracehop.traffic import TrafficRecord, traffic_table

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
WIDTH = 80
BOX_CHARACTERS = set("─│┃━┏┓┗┛┡┩└┘├┤┬┴┼╇")
LONG_MESSAGE = "451 4.7.1 greylisted by greylisted.example, try again later (the first delivery is deferred)"

RECORDS = [
    TrafficRecord(
        "POST", "/api/users", 201, "c4608e314784605af7179076d329aa0a", 201, "grace.a1b2c3.1@example.org"
    ),
    TrafficRecord("GET", "/api/users/2", 200, "33c39fd2ec62d3d364814284761de9a1", 200, ""),
    TrafficRecord(
        "GET",
        "/api/jobs/1441f040-7f5a-4c1e-9a57-12345678abcd",
        200,
        "2888ea32f54f6c211c75816199533b21",
        200,
        "state RETRY",
    ),
    TrafficRecord("GET", "/api/users/900049123", 404, "791eaacd17e5933f1a749040e8c7fe8e", 404, LONG_MESSAGE),
    TrafficRecord("POST", "/api/users", 503, "", 201, "users unavailable [not markup]"),
]

LOG_FIELDS = [
    {"ts": "2026-11-29T19:33:22.439169Z", "level": "INFO", "service": "users", "message": "user created"},
    {
        "ts": "2026-11-29T19:33:22.442550Z",
        "level": "INFO",
        "service": "gateway",
        "message": "request",
        "method": "POST",
        "route": "/api/users",
        "path": "/api/users",
        "status": 201,
        "duration_ms": 6.855,
    },
    {
        "ts": "2026-11-29T19:33:22.454019Z",
        "level": "WARNING",
        "service": "worker",
        "message": "Task send_welcome_email[46a60c1d-9e11-49bc-8486-c35971b5ff11] retry: Retry in 0s",
        "task": "send_welcome_email",
        "reason": LONG_MESSAGE,
    },
]


def terminal(width: int = WIDTH) -> Console:
    return Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None, record=True)


def pipe() -> Console:
    # What rich makes of a pipe: not a terminal, 80 columns assumed. make_console() adds soft wrapping.
    console = Console(file=io.StringIO(), force_terminal=False, width=WIDTH, highlight=False)
    console.soft_wrap = True
    return console


def terminal_lines(console: Console) -> list[str]:
    return [line.rstrip() for line in console.export_text().splitlines()]


def pipe_lines(console: Console) -> list[str]:
    return console.file.getvalue().splitlines()


def squeezed(text: str) -> str:
    """Without any whitespace: a value folded over two lines of its column is whole again."""
    return "".join(text.split())


def assert_fits(lines: list[str], width: int = WIDTH) -> None:
    too_wide = [line for line in lines if cell_len(line) > width]
    assert not too_wide, f"lines wider than {width} columns:\n" + "\n".join(too_wide)
    assert not any("…" in line for line in lines), "something was cut with an ellipsis"


def log_lines() -> list[LogLine]:
    return [LogLine(parse_timestamp(f["ts"]), dict(f), json.dumps(f), Path("x.log")) for f in LOG_FIELDS]


def error_trace() -> list:
    return [
        *contract_spans(),
        make_span(
            10,
            9,
            "worker",
            "INTERNAL",
            "deliver_welcome_email",
            62,
            10,
            status_code="ERROR",
            status_message=LONG_MESSAGE,
        ),
    ]


# ---------------------------------------------------------------------------------------------- traffic


def test_traffic_at_80_columns_keeps_every_column_id_and_request() -> None:
    console = terminal()
    print_table(console, traffic_table(RECORDS))
    lines = terminal_lines(console)

    assert_fits(lines)
    assert lines[1].split() == ["#", "status", "trace", "id", "request"]
    for number, record in enumerate(RECORDS, start=1):
        (row,) = [line for line in lines if line.split()[:1] == [str(number)]]
        assert str(record.status) in row and (record.trace_id or "(none)") in row
    text = squeezed("\n".join(lines))
    for record in RECORDS:
        assert squeezed(f"{record.method} {record.path} {record.note}") in text


def test_traffic_into_a_pipe_is_one_whole_line_per_request() -> None:
    console = pipe()
    print_table(console, traffic_table(RECORDS))
    lines = pipe_lines(console)

    assert lines[0] == "traffic: one trace per request"
    assert not BOX_CHARACTERS & set("".join(lines))
    rows = lines[2:]
    assert len(rows) == len(RECORDS)
    for row, record in zip(rows, RECORDS, strict=True):
        assert row.split()[1:3] == [str(record.status), record.trace_id or "(none)"]
        assert row.endswith(f"{record.method} {record.path}" + (f"  {record.note}" if record.note else ""))
    assert max(map(len, rows)) > WIDTH  # the long message was not cut to the 80 columns rich assumes


# ------------------------------------------------------------------------------------------------- logs


def test_logs_at_80_columns_wrap_between_fields_not_inside_them() -> None:
    console = terminal()
    print_table(console, logs_table(log_lines(), TRACE))
    lines = terminal_lines(console)

    assert_fits(lines)
    assert "level" in lines[1] and "service" in lines[1]
    for fields in LOG_FIELDS:
        row = next(line for line in lines if line.startswith(fields["ts"][11:26]))
        assert fields["service"] in row and fields["level"] in row
    text = "\n".join(lines)
    for field in (
        "method=POST",
        "route=/api/users",
        "status=201",
        "duration_ms=6.855",
        "task=send_welcome_email",
    ):
        assert field in text  # each on one line, whole
    assert squeezed(LOG_FIELDS[2]["message"]) in squeezed(text)
    assert squeezed(f"reason={LONG_MESSAGE}") in squeezed(text)


def test_logs_into_a_pipe_are_one_whole_line_per_log_line() -> None:
    console = pipe()
    print_table(console, logs_table(log_lines(), TRACE))
    lines = pipe_lines(console)

    assert not BOX_CHARACTERS & set("".join(lines))
    rows = lines[2:]
    assert len(rows) == len(LOG_FIELDS)
    assert rows[1].split()[:4] == ["19:33:22.442550", "gateway", "INFO", "request"]
    assert rows[1].endswith("method=POST route=/api/users path=/api/users status=201 duration_ms=6.855")
    assert rows[2].endswith(f"task=send_welcome_email reason={LONG_MESSAGE}")


# -------------------------------------------------------------------------------------------- waterfall


def test_waterfall_at_80_columns_shows_the_whole_header_and_error_message() -> None:
    console = terminal()
    render_waterfall(error_trace(), console)
    lines = terminal_lines(console)

    assert_fits(lines)
    header = " ".join(lines[:2])
    for part in (f"trace {TRACE}", "10 spans", "gateway, users, worker", "1 error"):
        assert part in header
    span_lines = [line for line in lines if "  │ " in line]
    assert shape(parse_text("\n".join(span_lines))) == shape(build_tree(error_trace()))
    assert span_lines[-1].endswith("✗")
    assert squeezed(f"worker INTERNAL deliver_welcome_email: ✗ {LONG_MESSAGE}") in squeezed("\n".join(lines))


def test_waterfall_into_a_pipe_is_one_whole_line_per_span() -> None:
    console = pipe()
    render_waterfall(error_trace(), console)
    lines = pipe_lines(console)

    assert lines[0] == f"trace {TRACE}  ·  10 spans  ·  80.00 ms  ·  gateway, users, worker  ·  1 error"
    assert len(lines) == 1 + len(error_trace())
    assert lines[-1].endswith(f"✗ {LONG_MESSAGE}")
    assert shape(parse_text("\n".join(lines[1:]))) == shape(build_tree(error_trace()))


# ------------------------------------------------------------------------------------- the real CLI


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunningTraceStore]:
    with serve_in_thread(db_path=tmp_path / "traces.sqlite3") as running:
        yield running


@pytest.fixture
def failed_trace(store: RunningTraceStore) -> str:
    """A gateway SERVER span with a worker child that failed with a long message, in the real store."""
    session = requests.Session()
    session.trust_env = False
    exporter = OTLPSpanExporter(endpoint=store.traces_url, session=session)
    providers = {
        service: TracerProvider(resource=Resource.create({"service.name": service}))
        for service in ("gateway", "worker")
    }
    for provider in providers.values():
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway, worker = (providers[name].get_tracer("tests") for name in ("gateway", "worker"))
    with (
        gateway.start_as_current_span("POST /api/users", kind=SpanKind.SERVER) as root,
        worker.start_as_current_span("run/send_welcome_email") as failed,
    ):
        failed.set_status(Status(StatusCode.ERROR, LONG_MESSAGE))
    for provider in providers.values():
        provider.shutdown()
    return format(root.get_span_context().trace_id, "032x")


def run_cli(args: list[str], env: dict[str, str], tty: bool) -> list[str]:
    """`python -m tracehop ARGS` with stdout on a pipe, or on a pseudo-terminal of WIDTH columns."""
    command = [sys.executable, "-m", "tracehop", *args]
    full_env = {**os.environ, **env, "COLUMNS": str(WIDTH), "TERM": "xterm"}
    if not tty:
        result = subprocess.run(
            command, env=full_env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()
    controller, terminal_end = pty.openpty()
    process = subprocess.Popen(command, env=full_env, cwd=REPO_ROOT, stdout=terminal_end, stderr=terminal_end)
    os.close(terminal_end)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.5)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=10) == 0, output.decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", output.decode())
    return [line.rstrip() for line in text.replace("\r", "").splitlines()]


def test_the_cli_into_a_pipe_prints_whole_lines(
    store: RunningTraceStore, failed_trace: str, tmp_path: Path
) -> None:
    (tmp_path / "worker.log").write_text(
        json.dumps({**LOG_FIELDS[2], "trace_id": failed_trace}) + "\n", encoding="utf-8"
    )
    env = {"TRACEHOP_QUERY_URL": store.query_url, "TRACEHOP_LOG_DIR": str(tmp_path)}

    trace = run_cli(["trace", failed_trace, "--wait", "2"], env, tty=False)
    assert trace[0].startswith(f"trace {failed_trace}  ·  2 spans") and trace[0].endswith(
        "gateway, worker  ·  1 error"
    )
    assert trace[-2].endswith(f"✗ {LONG_MESSAGE}")
    # Under the waterfall: where the same trace is in the browser (the trace viewer).
    assert trace[-1] == f"In a browser: {store.query_url}/trace/{failed_trace}"
    logs = run_cli(["logs", failed_trace], env, tty=False)
    assert logs[-1].endswith(f"reason={LONG_MESSAGE}") and LOG_FIELDS[2]["message"] in logs[-1]
    assert not BOX_CHARACTERS & set("".join(logs))


def test_the_cli_on_an_80_column_terminal_fits_and_keeps_everything(
    store: RunningTraceStore, failed_trace: str, tmp_path: Path
) -> None:
    (tmp_path / "worker.log").write_text(
        json.dumps({**LOG_FIELDS[2], "trace_id": failed_trace}) + "\n", encoding="utf-8"
    )
    env = {"TRACEHOP_QUERY_URL": store.query_url, "TRACEHOP_LOG_DIR": str(tmp_path)}

    trace = run_cli(["trace", failed_trace, "--wait", "2"], env, tty=True)
    assert_fits(trace)
    assert failed_trace in trace[0] and "1 error" in " ".join(trace[:2])
    assert squeezed(LONG_MESSAGE) in squeezed("\n".join(trace))
    logs = run_cli(["logs", failed_trace], env, tty=True)
    assert_fits(logs)
    assert squeezed(f"reason={LONG_MESSAGE}") in squeezed("\n".join(logs))
    assert "┏" in logs[1] or "─" in "".join(logs)  # a terminal gets rich's table, not the plain lines


def test_a_reader_that_stops_early_is_not_an_error(tmp_path: Path) -> None:
    """`make logs ID=… | head -1`: the pipe closes under the command, which must end quietly with 0."""
    (tmp_path / "worker.log").write_text(
        "".join(json.dumps({**LOG_FIELDS[2], "trace_id": TRACE, "n": n}) + "\n" for n in range(2000)),
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tracehop", "logs", TRACE],
        env={**os.environ, "TRACEHOP_LOG_DIR": str(tmp_path)},
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout.readline().startswith(b"logs of trace")
    process.stdout.close()  # what head does after its line

    assert process.wait(timeout=60) == 0
    assert b"Traceback" not in process.stderr.read()


def test_a_deep_tree_at_80_columns_keeps_a_bar_on_every_span() -> None:
    # The greylisted retry: the retry's spans hang three levels under the first attempt's consumer.
    spans = [
        *error_trace(),
        make_span(11, 9, "worker", "PRODUCER", "apply_async/send_welcome_email", 70, 5),
        make_span(12, 11, "worker", "CONSUMER", "run/send_welcome_email", 76, 40),
        make_span(13, 12, "worker", "INTERNAL", "deliver_welcome_email", 80, 30),
    ]
    console = terminal()
    render_waterfall(spans, console)
    lines = terminal_lines(console)

    assert_fits(lines)
    span_lines = [line for line in lines if "  │ " in line]
    assert len(span_lines) == len(spans)
    assert all("█" in line for line in span_lines), "a bar fell off the screen's edge"
    (failed,) = [line for line in span_lines if "deliver_welcome_email" in line and "10.00 ms" in line]
    assert failed.endswith("█ ✗"), "the error mark fell off the screen's edge"
