"""A worker's main process SIGKILLed: the spans of the jobs its pool child had finished still arrive.

Celery kills a pool child when its main process dies (parent-death signal); with SIGKILL, as Celery sets
it, the child's batch span processor died holding the CONSUMER spans of the jobs it finished in its last
OTEL_BSP_SCHEDULE_DELAY: jobs SUCCESS, traces without their worker span (`make chaos` counted 8-18 such
traces per worker kill at 40 requests/s). services/telemetry/parent_death.py gives the child a
parent-death signal of its own, which takes it out through the flush.

Deterministic: the schedule delay here is a minute, so no span of these jobs has been exported when the
main process is killed; only the child's flush on its way out can bring them. The second worker program
is stopped, so the killed node is the one that ran every job; its pool is two, so a child whose sibling
still holds its pipes must leave too.

The kernel sends the parent-death signal each time the thread the child counts as its parent exits: one
SIGKILL of the main process signals a child one to three times, a few ms apart, depending on which of the
main's threads dies first. That is what made the first version of this fix (SIGTERM, whose second
delivery killed the child in its flush) pass one run and fail the next. The second test makes repeats
certain: it sends the children the same signal again, without pause, for half a second from the kill,
while the trace store is paused (SIGSTOP), so that each child is still flushing (its POST waits for an
answer; the export timeout is 3 s).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from services.telemetry.parent_death import PARENT_DEATH_SIGNAL
from tests.integration.fault_tools import Programs
from tests.integration.stack import RunningStack, private_stack
from tests.waiting import eventually
from tracehop.stack.processes import children, process_exists

ENV = {
    "GUNICORN_WORKERS": "1",
    "OTEL_BSP_SCHEDULE_DELAY": "60000",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_WORKER_CONCURRENCY": "4",  # two programs of two: `worker` and `worker-b`
}
JOBS = 6
POOL = 2
HOLD_S = 0.5  # the trace store paused: the children's flush waits this long


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("worker-kill-spans"), ENV) as running:
        Programs(running.stack).stop("worker-b")  # every job on the node that is killed
        yield running


def worker_spans(stack: RunningStack, trace_id: str) -> list[str]:
    spans = stack.traces.get_trace(trace_id) or []
    return [s.name for s in spans if s.service == "worker" and s.kind == "CONSUMER"]


def finished_jobs(stack: RunningStack) -> tuple[int, list[int], list[str]]:
    """A worker main process with its whole pool up, then JOBS jobs done: (main, pool, trace ids)."""
    programs = Programs(stack.stack)
    main = programs.wait_running("worker", timeout=60)
    pool = eventually(lambda: len(children(main)) == POOL and children(main), 60, "the worker's pool")
    traces = []
    for _ in range(JOBS):
        response = stack.post_user()
        assert response.status_code == 201, response.text
        traces.append((response.json()["trace_id"], response.json()["job_id"]))
    for _, job_id in traces:
        assert stack.wait_for_job(job_id)["state"] == "SUCCESS"
    # Nothing of the worker's exported yet (a minute's schedule delay): what follows comes from the flush.
    assert not [t for t, _ in traces if worker_spans(stack, t)]
    return main, pool, [t for t, _ in traces]


def assert_flushed_on_the_way_out(stack: RunningStack, main: int, pool: list[int], traces: list[str]):
    # The children still die with their main process (Celery's intent), within the export timeout.
    eventually(lambda: not [pid for pid in pool if process_exists(pid)], 10, "the pool children gone")
    eventually(
        lambda: all(worker_spans(stack, t) for t in traces),
        15,
        "every finished job's run/send_welcome_email span, flushed by the dying pool child",
    )
    for trace_id in traces:
        assert worker_spans(stack, trace_id) == ["run/send_welcome_email"], trace_id
    Programs(stack.stack).wait_running("worker", other_than=main, timeout=60)  # for the next test


@contextlib.contextmanager
def trace_store_paused(stack: RunningStack) -> Iterator[None]:
    store = Programs(stack.stack).pid("trace-store")
    os.kill(store, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(store, signal.SIGCONT)


def test_a_killed_worker_main_process_loses_no_finished_jobs_span(stack: RunningStack):
    main, pool, traces = finished_jobs(stack)
    with trace_store_paused(stack):
        os.kill(main, signal.SIGKILL)
        time.sleep(HOLD_S)
    assert_flushed_on_the_way_out(stack, main, pool, traces)


def test_a_repeated_parent_death_signal_does_not_cut_the_flush_short(stack: RunningStack):
    main, pool, traces = finished_jobs(stack)
    with trace_store_paused(stack):
        os.kill(main, signal.SIGKILL)
        # At once, and while the children wait in their flush: the kernel's own signals come while the
        # main process dies, and the test above shows that they alone start the exit; these may overtake
        # them, and the later ones are the repeats.
        # Without a pause: the window that matters is the ~2 ms between the first signal and the POST
        # leaving the child (a child killed after that still delivers: the paused store reads the request
        # from its socket later). A repeat every 5 ms missed it (strace), so the guards' removal passed.
        deadline = time.monotonic() + HOLD_S
        while time.monotonic() < deadline:
            for pid in pool:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, PARENT_DEATH_SIGNAL)
    assert_flushed_on_the_way_out(stack, main, pool, traces)


def listening_socket_inodes(port: int) -> set[str]:
    """The inodes of the sockets listening on 127.0.0.1:`port` (/proc/net/tcp: state 0A is LISTEN)."""
    local = f"0100007F:{port:04X}"
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local and fields[3] == "0A":
            inodes.add(fields[9])
    return inodes


def holds_any(pid: int, inodes: set[str]) -> bool:
    fd_dir = f"/proc/{pid}/fd"
    held = set()
    for fd in os.listdir(fd_dir):
        with contextlib.suppress(OSError):
            target = os.readlink(f"{fd_dir}/{fd}")
            if target.startswith("socket:["):
                held.add(target[len("socket:[") : -1])
    return bool(held & inodes)


def test_pool_children_do_not_hold_the_main_process_metrics_port(stack: RunningStack):
    """A child outlives its killed main process while it flushes (above); had it kept its inherited copy
    of the main's /metrics listening socket, the port would stay taken and the successor's readiness
    probe connect to a socket nobody accepts from (`make chaos`: the worker not back within 60 s)."""
    main = Programs(stack.stack).wait_running("worker", timeout=60)
    pool = eventually(lambda: len(children(main)) == POOL and children(main), 60, "the worker's pool")
    listener = listening_socket_inodes(stack.stack.ports.worker_metrics)
    assert listener and holds_any(main, listener), "the main process serves /metrics"
    # A child closes its copy in worker_process_init, a moment after the fork: on a loaded machine the test
    # can see a child before that. Without the fix a child keeps the copy for its whole life, so this fails.
    eventually(
        lambda: not [pid for pid in pool if holds_any(pid, listener)],
        30,
        "every pool child closed its copy of the /metrics listener",
    )


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).ok
    except requests.RequestException:
        return False


def test_the_successor_serves_metrics_while_the_killed_main_process_child_still_flushes(
    stack: RunningStack,
):
    main, pool, traces = finished_jobs(stack)
    url = stack.stack.urls["worker_metrics"]
    with trace_store_paused(stack):  # the children's flush waits: they outlive their main process
        os.kill(main, signal.SIGKILL)
        successor = Programs(stack.stack).wait_running("worker", other_than=main, timeout=60)
        eventually(lambda: answers(url), 30, "the successor's /metrics")
        assert holds_any(successor, listening_socket_inodes(stack.stack.ports.worker_metrics))
    assert_flushed_on_the_way_out(stack, main, pool, traces)
