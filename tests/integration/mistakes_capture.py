"""What each "broken on purpose" switch looks like in `make trace`, captured from real stacks.

    .venv/bin/python -m tests.integration.mistakes_capture [1 2 3 4]

For each switch: a private stack with it on (free ports, a temporary directory), the request of its test
in tests/integration/test_broken_on_purpose.py, then `python -m tracehop trace <id>` (what `make trace`
runs) for every trace that request produced. Switches 2 and 4 lose spans when a process exits, so their
stack exports only on exit (OTEL_BSP_SCHEDULE_DELAY=60000, as in the tests): the script stops the stack,
then serves the stopped stack's trace file with `python -m tracehop trace-store`, as a second `make up`
would. docs/context-propagation.md shows the output.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.integration.stack import RunningStack, start_private_stack
from tracehop.stack.config import free_ports
from tracehop.stack.readiness import http_ok
from tracehop.traces.query import TraceQuery

BASE_ENV = {"OTEL_BSP_SCHEDULE_DELAY": "200", "TRACEHOP_MAIL_LATENCY_MS": "1", "GUNICORN_WORKERS": "1"}
SWITCHES = {
    "1": {"TRACEHOP_BROKEN_UNINSTRUMENTED_PRODUCER": "1"},
    "2": {"TRACEHOP_BROKEN_SETUP_BEFORE_FORK": "1", "OTEL_BSP_SCHEDULE_DELAY": "60000"},
    "3": {"TRACEHOP_BROKEN_B3_WORKER": "1"},
    "4": {"TRACEHOP_BROKEN_NO_FLUSH_ON_CHILD_EXIT": "1", "OTEL_BSP_SCHEDULE_DELAY": "60000"},
}


def make_trace(query_url: str, trace_id: str) -> None:
    print(f"$ make trace ID={trace_id}", flush=True)
    env = {**os.environ, "COLUMNS": "110"}
    subprocess.run([sys.executable, "-m", "tracehop", "trace", "--query-url", query_url, trace_id], env=env)
    print(flush=True)


def other_traces(query: TraceQuery, service: str, known: set[str]) -> list[str]:
    """Trace ids with spans of `service` that the requests' own answers did not name."""
    now = datetime.now(UTC)
    found = query.search(service, now - timedelta(minutes=10), now + timedelta(minutes=1), limit=20)
    return sorted(set(found) - known)


def send(stack: RunningStack, switch: str) -> list[str]:
    """The request(s) of the switch's test; the trace ids the gateway answered."""
    created = stack.http.post(f"{stack.gateway}/api/users", json={"name": "Ada", "email": "ada@example.org"})
    body = created.json()
    stack.wait_for_job(body["job_id"])
    if switch != "3":
        return [body["trace_id"]]
    report = stack.http.post(f"{stack.gateway}/api/users/{body['user']['id']}/report").json()
    stack.wait_for_job(report["job_id"])
    return [report["trace_id"]]


def capture(switch: str) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"tracehop-mistake-{switch}-"))
    env = {**BASE_ENV, **SWITCHES[switch]}
    print(f"## switch {switch}: {' '.join(f'{k}={v}' for k, v in SWITCHES[switch].items())}\n", flush=True)
    stack = start_private_stack(root, env)
    try:
        trace_ids = send(stack, switch)
        time.sleep(2)  # a docs capture, not a test: let late spans of the other processes arrive
        if env["OTEL_BSP_SCHEDULE_DELAY"] == "60000":
            stack.stack.stop()
            show_stopped(stack, trace_ids)
            return
        known = set(trace_ids)
        for service in ("worker", "users"):
            trace_ids += other_traces(stack.traces, service, known | set(trace_ids))
        for trace_id in trace_ids:
            make_trace(stack.stack.urls["query"], trace_id)
    finally:
        stack.stack.stop()


def show_stopped(stack: RunningStack, trace_ids: list[str]) -> None:
    otlp, query = free_ports(2)
    store = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tracehop",
            "trace-store",
            "--otlp-port",
            str(otlp),
            "--query-port",
            str(query),
        ]
        + ["--db", str(stack.stack.layout.traces_db)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{query}"
        deadline = time.monotonic() + 20
        while http_ok(f"{url}/api/v3/services") is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        print("(stack stopped; its trace file served again, as after `make down` and `make up`)\n")
        for trace_id in trace_ids:
            make_trace(url, trace_id)
    finally:
        store.terminate()
        store.wait(10)


if __name__ == "__main__":
    for number in sys.argv[1:] or sorted(SWITCHES):
        capture(number)
