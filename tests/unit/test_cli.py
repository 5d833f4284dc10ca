"""`python -m tracehop`: argument parsing, and the commands that need no running stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tracehop import cli
from tracehop.stack.compose import published_ports
from tracehop.stack.config import free_port
from tracehop.traces.logs import read_trace_logs
from tracehop.traces.store.server import RunningTraceStore, serve_in_thread
from tracehop.traces.trace_id import InvalidTraceId, normalise_trace_id

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
OTHER_TRACE = "00f067aa0ba902b700f067aa0ba902b7"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Private var and log directories, and never Docker: these tests must not touch a real stack."""
    monkeypatch.setenv("TRACEHOP_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRACEHOP_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("TRACEHOP_STACK", "local")
    for name in ("TRACEHOP_QUERY_URL", "TRACEHOP_QUERY_PORT", "TRACEHOP_OTLP_PORT", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def flat(text: str) -> str:
    """Output with rich's line wrapping undone, for substring assertions."""
    return " ".join(text.split())


def log_line(ts: str, service: str, message: str, trace_id: str = TRACE, **fields: object) -> str:
    record = {
        "ts": ts,
        "level": "INFO",
        "service": service,
        "message": message,
        "logger": f"services.{service}",
        "trace_id": trace_id,
        "span_id": "00f067aa0ba902b7",
        **fields,
    }
    return json.dumps(record) + "\n"


# ----------------------------------------------------------------------------------------------- parsing


def test_every_command_parses() -> None:
    assert cli.parse_args(["up"]).timeout == cli.START_TIMEOUT
    assert cli.parse_args(["down", "--timeout", "5"]).timeout == 5.0
    assert cli.parse_args(["traffic", "--count", "7", "--base-url", "http://gw:1"]).count == 7
    assert cli.parse_args(["trace"]).trace_id is None
    assert cli.parse_args(["trace", TRACE]).trace_id == TRACE
    logs = cli.parse_args(["logs", TRACE, "--json"])
    assert (logs.trace_id, logs.json) == (TRACE, True)
    for command in ("status", "urls"):
        assert cli.parse_args([command]).handler is getattr(cli, f"cmd_{command}")


def test_trace_store_ports_default_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACEHOP_OTLP_PORT", "24318")

    args = cli.parse_args(["trace-store", "--db", "/tmp/t.sqlite3"])

    assert (args.otlp_port, args.query_port, args.db, args.host) == (
        24318,
        16686,
        "/tmp/t.sqlite3",
        "127.0.0.1",
    )


@pytest.mark.parametrize(
    "argv", [[], ["launch"], ["traffic", "--count", "0"], ["logs"], ["trace-store", "--otlp-port", "x"]]
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)

    assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_python_dash_m_tracehop_runs_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "tracehop", "--help"], capture_output=True, text=True)

    assert result.returncode == 0
    assert "trace-store" in result.stdout


# ----------------------------------------------------------------------------------------- stack state


def test_down_when_nothing_runs_says_so_and_succeeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["down"]) == 0

    assert "not running" in capsys.readouterr().out


def test_down_ignores_and_cleans_files_left_by_a_crashed_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    var = tmp_path / "var"
    var.mkdir()
    # A pid file naming a live process that is not a supervisord (this test's own), and a dead socket.
    (var / "supervisord.pid").write_text(f"{os.getpid()}\n")
    (var / "supervisor.sock").write_text("")

    assert cli.main(["down"]) == 0

    assert "not running" in capsys.readouterr().out
    assert not (var / "supervisord.pid").exists()
    assert not (var / "supervisor.sock").exists()


def test_status_when_nothing_runs_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["status"]) == cli.EXIT_NOT_RUNNING

    assert "not running" in capsys.readouterr().out


def test_passwords_in_urls_are_hidden() -> None:
    assert cli._hide_password("redis://:s3cret@cache:6379/0") == "redis://:***@cache:6379/0"
    assert cli._hide_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_published_ports_of_both_compose_ps_formats() -> None:
    line_per_container = "\n".join(
        [
            json.dumps(
                {
                    "Service": "grafana",
                    "Publishers": [
                        {"URL": "127.0.0.1", "TargetPort": 3000, "PublishedPort": 3000, "Protocol": "tcp"}
                    ],
                }
            ),
            json.dumps(
                {
                    "Service": "jaeger",
                    "Publishers": [
                        {"URL": "0.0.0.0", "TargetPort": 16686, "PublishedPort": 16686, "Protocol": "tcp"},
                        {"URL": "::", "TargetPort": 16686, "PublishedPort": 16686, "Protocol": "tcp"},
                        {"URL": "0.0.0.0", "TargetPort": 6831, "PublishedPort": 6831, "Protocol": "udp"},
                        {"URL": "", "TargetPort": 4317, "PublishedPort": 0, "Protocol": "tcp"},
                    ],
                }
            ),
        ]
    )
    json_array = json.dumps([json.loads(line) for line in line_per_container.splitlines()])

    for output in (line_per_container, json_array):
        found = [(port.service, port.url) for port in published_ports(output)]
        assert found == [("grafana", "http://127.0.0.1:3000"), ("jaeger", "http://127.0.0.1:16686")]


# ------------------------------------------------------------------------------------------------- logs


@pytest.fixture
def service_logs(tmp_path: Path) -> Path:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "gateway.log").write_text(
        log_line("2026-11-25T10:00:00.100000Z", "gateway", "queued welcome e-mail", job_id="j1")
        + log_line("2026-11-25T10:00:00.300000Z", "gateway", "request", status=201)
        + log_line("2026-11-25T10:00:00.200000Z", "gateway", "another trace", trace_id=OTHER_TRACE)
    )
    (logs / "users.log").write_text(
        log_line("2026-11-25T10:00:00.050000+00:00", "users", "user created", user_id=7)
        + "not json, e.g. a stray print\n"
    )
    (logs / "worker.log").write_text(
        log_line("2026-11-25T10:00:00.250000Z", "worker", "delivering welcome e-mail", attempt=0)
        + log_line("2026-11-25T10:00:01.250000Z", "worker", "welcome e-mail delivered")
    )
    (logs / "worker.out").write_text(log_line("2026-11-25T10:00:00.000001Z", "worker", "not a .log file"))
    return logs


def test_logs_of_several_files_merge_in_time_order(service_logs: Path) -> None:
    lines = read_trace_logs(service_logs, TRACE)

    assert [(line.fields["service"], line.fields["message"]) for line in lines] == [
        ("users", "user created"),
        ("gateway", "queued welcome e-mail"),
        ("worker", "delivering welcome e-mail"),
        ("gateway", "request"),
        ("worker", "welcome e-mail delivered"),
    ]


def test_logs_command_prints_raw_json_lines_in_time_order(
    service_logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["logs", TRACE.upper(), "--json"]) == 0

    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["ts"][17:26] for line in printed] == [
        "00.050000",
        "00.100000",
        "00.250000",
        "00.300000",
        "01.250000",
    ]
    assert {line["trace_id"] for line in printed} == {TRACE}


def test_logs_command_table_shows_services_messages_and_fields(
    service_logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["logs", TRACE]) == 0

    output = flat(capsys.readouterr().out)
    assert "user created" in output and "user_id=7" in output and "job_id=j1" in output
    assert output.index("user created") < output.index("welcome e-mail delivered")
    assert "another trace" not in output


def test_logs_of_an_unknown_trace_is_a_clear_failure(
    service_logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["logs", "ab" * 16]) == 1

    assert f"no log line with trace_id {'ab' * 16}" in flat(capsys.readouterr().err)


def test_logs_of_something_that_is_not_a_trace_id_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["logs", "not-a-trace-id"]) == 1

    assert "is not a trace id" in flat(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------ trace


def test_trace_without_an_id_and_no_trace_store_says_the_stack_is_not_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("TRACEHOP_QUERY_URL", nobody)

    assert cli.main(["trace"]) == 1

    err = flat(capsys.readouterr().err)
    assert f"does not answer at {nobody}" in err and "make up" in err
    assert "Traceback" not in err


def test_trace_when_the_query_api_is_down_says_the_stack_is_not_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"

    assert cli.main(["trace", TRACE, "--query-url", nobody, "--wait", "1"]) == 1

    err = flat(capsys.readouterr().err)
    assert f"does not answer at {nobody}" in err
    assert "make up" in err


# ---------------------------------------------------------------------------------- ids as people have them

SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    "given",
    [
        TRACE,
        TRACE.upper(),
        f"  {TRACE}\n",
        f'"{TRACE}"',
        f"00-{TRACE}-{SPAN}-01",  # a traceparent
        f"00-{TRACE.upper()}-{SPAN.upper()}-03",  # a traceresponse, as the gateway sends it
        f"traceresponse: 00-{TRACE}-{SPAN}-03",  # the header line as curl -i prints it
        f"Traceparent:00-{TRACE}-{SPAN}-00",
        f"cc-{TRACE}-{SPAN}-01-what-a-future-version-adds",  # W3C: a later version may append fields
    ],
)
def test_a_trace_id_is_taken_in_the_forms_people_have_it(given: str) -> None:
    assert normalise_trace_id(given) == TRACE


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("12345", "is not a trace id"),
        (TRACE + "0", "is not a trace id"),
        (f"00-{TRACE}-{SPAN}", "is not a trace id"),  # no flags
        (f"00-{TRACE}-{SPAN}-01-extra", "not a valid traceparent"),  # version 00 has exactly four fields
        (f"ff-{TRACE}-{SPAN}-01", "not a valid traceparent"),  # version ff is forbidden
        ("0" * 32, "all-zero trace id"),
        (f"00-{'0' * 32}-{SPAN}-01", "all-zero trace id"),
        (f"x-traceparent: 00-{TRACE}-{SPAN}-01", "is not a trace id"),
    ],
)
def test_what_is_not_a_trace_id_is_refused_with_the_forms_that_are(given: str, problem: str) -> None:
    with pytest.raises(InvalidTraceId, match=problem) as refused:
        normalise_trace_id(given)
    if "is not a trace id" in problem:
        assert "traceparent/traceresponse value, 00-<trace id>-<span id>-<flags>" in str(refused.value)


def test_logs_take_a_traceresponse_value(service_logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["logs", f"traceresponse: 00-{TRACE}-{SPAN}-03", "--json"]) == 0

    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(printed) == 5 and {line["trace_id"] for line in printed} == {TRACE}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RunningTraceStore]:
    with serve_in_thread(db_path=tmp_path / "traces.sqlite3") as running:
        yield running


def export_roots(store: RunningTraceStore, roots: list[tuple[str, str, int]]) -> list[str]:
    """One SERVER span per (service, name, seconds ago), exported to the real store; their trace ids."""
    session = requests.Session()
    session.trust_env = False
    trace_ids = []
    now = time.time_ns()
    for service, name, seconds_ago in roots:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        exporter = OTLPSpanExporter(endpoint=store.traces_url, session=session)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        start = now - seconds_ago * 1_000_000_000
        span = provider.get_tracer("tests").start_span(name, kind=SpanKind.SERVER, start_time=start)
        span.end(end_time=start + 5_000_000)
        trace_ids.append(format(span.get_span_context().trace_id, "032x"))
        provider.shutdown()
    return trace_ids


def test_trace_without_an_id_shows_the_latest_create_in_the_trace_store(
    store: RunningTraceStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As after a curl: no `make traffic`, so no last_traffic.json. The newest trace is not a create, the
    # newest create came from another service's span name, and one create is older than the rest.
    older, latest, _, _ = export_roots(
        store,
        [
            ("gateway", "POST /api/users", 30),
            ("gateway", "POST /api/users", 20),
            ("users", "POST /users", 10),
            ("gateway", "GET /api/users/<user_id>", 5),
        ],
    )
    monkeypatch.setenv("TRACEHOP_QUERY_URL", store.query_url)

    assert cli.main(["trace", "--wait", "1"]) == 0

    header = capsys.readouterr().out.splitlines()[0]
    assert header.startswith(f"trace {latest}") and older not in header


def save_run(tmp_path: Path, trace_id: str, finished_at: float) -> None:
    """What `make traffic` leaves in var/: its run, whose last create is `trace_id`."""
    request = {"method": "POST", "path": "/api/users", "status": 201, "trace_id": trace_id}
    document = {"base_url": "http://127.0.0.1:8080", "finished_at": finished_at, "requests": [request]}
    (tmp_path / "var").mkdir(exist_ok=True)
    (tmp_path / "var" / "last_traffic.json").write_text(json.dumps(document))


def test_trace_without_an_id_right_after_make_traffic_shows_its_last_create(
    store: RunningTraceStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # make traffic has just finished: the store holds an older create, and the run's own last create is
    # still in the services' batch queues (it is exported here only after the run was saved).
    export_roots(store, [("gateway", "POST /api/users", 30)])
    save_run(tmp_path, TRACE, time.time())
    monkeypatch.setenv("TRACEHOP_QUERY_URL", store.query_url)
    store_spans_later = export_roots_with_id(store, TRACE)

    assert cli.main(["trace", "--wait", "5"]) == 0

    store_spans_later.join()
    assert capsys.readouterr().out.startswith(f"trace {TRACE}")


def test_trace_without_an_id_prefers_a_create_newer_than_the_saved_run(
    store: RunningTraceStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # make traffic a minute ago, then a curl: the curl's create is the latest.
    save_run(tmp_path, TRACE, time.time() - 60)
    (curl,) = export_roots(store, [("gateway", "POST /api/users", 5)])
    monkeypatch.setenv("TRACEHOP_QUERY_URL", store.query_url)

    assert cli.main(["trace", "--wait", "1"]) == 0

    assert capsys.readouterr().out.startswith(f"trace {curl}")


def export_roots_with_id(store: RunningTraceStore, trace_id: str) -> threading.Thread:
    """Export a gateway `POST /api/users` root span in `trace_id` half a second from now, in a thread."""

    def export() -> None:
        time.sleep(0.5)
        provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
        provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=store.traces_url)))
        parent = trace.NonRecordingSpan(
            trace.SpanContext(int(trace_id, 16), 0x1234, is_remote=True, trace_flags=trace.TraceFlags(1))
        )
        context = trace.set_span_in_context(parent)
        tracer = provider.get_tracer("tests")
        tracer.start_span("POST /api/users", context=context, kind=SpanKind.SERVER).end()
        provider.shutdown()

    thread = threading.Thread(target=export)
    thread.start()
    return thread


def test_trace_takes_a_traceparent_value(
    store: RunningTraceStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (trace_id,) = export_roots(store, [("gateway", "GET /api/users/<user_id>", 1)])
    monkeypatch.setenv("TRACEHOP_QUERY_URL", store.query_url)

    assert cli.main(["trace", f"00-{trace_id.upper()}-{SPAN}-01", "--wait", "1"]) == 0

    assert capsys.readouterr().out.startswith(f"trace {trace_id}")


def test_trace_without_an_id_in_an_empty_store_says_how_to_get_one(
    store: RunningTraceStore, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRACEHOP_QUERY_URL", store.query_url)

    assert cli.main(["trace"]) == 1

    err = flat(capsys.readouterr().err)
    assert "no POST /api/users" in err and "make traffic, or curl" in err and "make trace ID=" in err
