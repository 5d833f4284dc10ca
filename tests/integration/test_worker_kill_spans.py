"""A worker's main process SIGKILLed: the spans of the jobs its pool child had finished still arrive.

Celery kills a pool child when its main process dies (parent-death signal); with SIGKILL, as Celery sets
it, the child's batch span processor died holding the CONSUMER spans of the jobs it finished in its last
OTEL_BSP_SCHEDULE_DELAY: jobs SUCCESS, traces without their worker span (`make chaos` counted 8-18 such
traces per worker kill at 40 requests/s). services/telemetry/parent_death.py makes it SIGTERM, flushed.

Deterministic: the schedule delay here is a minute, so no span of these jobs has been exported when the
main process is killed; only the child's flush on its way out can bring them. One worker program (pool of
one), so the killed node is the one that ran every job.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.integration.fault_tools import Programs
from tests.integration.stack import RunningStack, private_stack
from tests.waiting import eventually
from tracehop.stack.processes import children, process_exists

ENV = {
    "GUNICORN_WORKERS": "1",
    "OTEL_BSP_SCHEDULE_DELAY": "60000",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_WORKER_CONCURRENCY": "1",
}
JOBS = 5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("worker-kill-spans"), ENV) as running:
        yield running


def worker_spans(stack: RunningStack, trace_id: str) -> list[str]:
    spans = stack.traces.get_trace(trace_id) or []
    return [s.name for s in spans if s.service == "worker" and s.kind == "CONSUMER"]


def test_a_killed_worker_main_process_loses_no_finished_jobs_span(stack: RunningStack):
    traces = []
    for _ in range(JOBS):
        response = stack.post_user()
        assert response.status_code == 201, response.text
        traces.append((response.json()["trace_id"], response.json()["job_id"]))
    for _, job_id in traces:
        assert stack.wait_for_job(job_id)["state"] == "SUCCESS"
    # Nothing of the worker's exported yet (a minute's schedule delay): what follows comes from the flush.
    assert not [t for t, _ in traces if worker_spans(stack, t)]
    main = Programs(stack.stack).pid("worker")
    pool = children(main)
    assert pool, "the worker's pool child"
    os.kill(main, signal.SIGKILL)
    eventually(lambda: not [pid for pid in pool if process_exists(pid)], 10, "the pool child gone")
    eventually(
        lambda: all(worker_spans(stack, t) for t, _ in traces),
        15,
        "every finished job's run/send_welcome_email span, flushed by the dying pool child",
    )
    for trace_id, _ in traces:
        assert worker_spans(stack, trace_id) == ["run/send_welcome_email"], trace_id
