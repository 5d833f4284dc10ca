"""A service started exactly the way docker-compose.yml starts it, against a real trace store.

The embedded stack gives each program OTEL_SERVICE_NAME in its environment; compose gives gateway and users
their name only through gunicorn's `--env`, which gunicorn applies AFTER it has loaded the config module.
So this is where "tracing is set up after the fork" matters: set up in the master while the config loads,
the spans would carry the master's resource (service `tracehop`, the master's pid) — the embedded stack
would never show it. No Docker needed: the same command, config module and environment, with this
machine's addresses.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO_ROOT, free_port
from tests.static.stack_files import raw_compose
from tracehop.stack.readiness import http_ok
from tracehop.traces.query import TraceQuery
from tracehop.traces.store.server import RunningTraceStore, serve_in_thread

SERVICE = "users"
TOKEN = "compose-start-test-token"
START_TIMEOUT_S = 60.0
REQUESTS = 8  # compose runs two gunicorn workers: enough requests to reach both, most likely

# How gunicorn reads a config file (gunicorn.app.base.Application.get_config_from_filename), in a
# fresh interpreter: then it reports which tracer provider is installed.
LOAD_CONFIG_LIKE_GUNICORN = """
import importlib.util, sys
from opentelemetry import trace
spec = importlib.util.spec_from_file_location("__config__", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["__config__"] = module
spec.loader.exec_module(module)
print(type(trace.get_tracer_provider()).__name__)
"""


def compose_service(name: str) -> dict:
    return raw_compose()["services"][name]


def compose_environment(store: RunningTraceStore, redis_url: str, scratch: Path) -> dict[str, str]:
    """compose's environment for the service, pointed at this machine instead of other containers; and
    nothing of the test run's own OTEL_* settings (the service name must come from `--env` alone)."""
    multiproc = scratch / "prometheus-multiproc"  # compose mounts an empty tmpfs there
    multiproc.mkdir(exist_ok=True)
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "TRACEHOP_", "PROMETHEUS_"))
    }
    from_compose = {
        name: str(value) for name, value in compose_service(SERVICE)["environment"].items() if value
    }
    return {
        **inherited,
        **from_compose,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{store.otlp_port}",
        "REDIS_URL": redis_url,
        "TRACEHOP_LOG_DIR": str(scratch / "logs"),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
        "TRACEHOP_SERVICE_TOKEN": TOKEN,
    }


def compose_command(port: int) -> list[str]:
    """The service's compose command, bound to 127.0.0.1:`port`, run with this virtualenv's gunicorn."""
    command = list(compose_service(SERVICE)["command"])
    assert command[0] == "gunicorn", command
    command[command.index("-b") + 1] = f"127.0.0.1:{port}"
    return [str(Path(sys.executable).with_name("gunicorn")), *command[1:]]


def config_module() -> str:
    command = compose_service(SERVICE)["command"]
    return command[command.index("-c") + 1]


@dataclass
class ComposeStarted:
    url: str
    master: subprocess.Popen
    traces: TraceQuery


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningTraceStore]:
    with serve_in_thread(db_path=tmp_path_factory.mktemp("compose-store") / "traces.sqlite3") as running:
        yield running


@pytest.fixture(scope="module")
def compose_users(
    store: RunningTraceStore, valkey_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ComposeStarted]:
    scratch = tmp_path_factory.mktemp("compose-users")
    port = free_port()
    output = (scratch / "gunicorn.out").open("w")
    master = subprocess.Popen(
        compose_command(port),
        cwd=REPO_ROOT,  # the image's WORKDIR holds the repository, so the config path is relative
        env=compose_environment(store, valkey_url, scratch),
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while (problem := http_ok(f"{url}/healthz")) is not None:
            if master.poll() is not None or time.monotonic() > deadline:
                tail = (scratch / "gunicorn.out").read_text()[-3000:]
                pytest.fail(f"users as compose starts it is not up ({problem}):\n{tail}")
            time.sleep(0.1)
        yield ComposeStarted(url, master, TraceQuery(store.query_url))
    finally:
        master.send_signal(signal.SIGTERM)  # gunicorn's graceful stop; workers flush their spans
        try:
            master.wait(timeout=30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(timeout=10)
        output.close()


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2 :].split()[1])  # after the command name: state, then ppid


def test_compose_names_the_service_only_through_gunicorns_env():
    # The premise of this module: were OTEL_SERVICE_NAME in the container's environment, a setup in the
    # master would get the name right and hide the mistake.
    service = compose_service(SERVICE)
    assert "OTEL_SERVICE_NAME" not in service["environment"]
    assert f"OTEL_SERVICE_NAME={SERVICE}" in service["command"]


def test_spans_carry_the_service_name_and_the_pid_of_a_gunicorn_worker(compose_users):
    http = requests.Session()
    http.trust_env = False
    trace_ids = []
    for user_id in range(1, REQUESTS + 1):
        response = http.get(
            f"{compose_users.url}/users/{user_id}", headers={"X-Service-Token": TOKEN}, timeout=10
        )
        assert response.status_code == 404, response.text  # an empty database: a traced request all the same
        trace_ids.append(response.headers["traceresponse"].split("-")[1])

    master_pid = compose_users.master.pid
    exporters = set()
    for trace_id in trace_ids:
        spans = compose_users.traces.wait_for_trace(
            trace_id, until=lambda spans: any(s.kind == "SERVER" for s in spans), timeout=30
        )
        for span in spans:
            assert span.service == SERVICE, (span.name, span.resource)
            exporters.add(span.resource["process.pid"])
    # Every span came from a process that set up tracing after the fork: a worker, child of the master.
    assert master_pid not in exporters
    assert {parent_pid(pid) for pid in exporters} == {master_pid}, (master_pid, exporters)


def test_loading_the_gunicorn_config_installs_no_tracer_provider(store, valkey_url, tmp_path):
    # What gunicorn's master does first: load the config file. A provider installed there would be
    # inherited by every worker and could no longer be replaced (the SDK sets the global provider once).
    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_CONFIG_LIKE_GUNICORN, config_module()],
        cwd=REPO_ROOT,
        env=compose_environment(store, valkey_url, tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert loaded.stdout.split()[-1] == "ProxyTracerProvider", loaded.stdout
