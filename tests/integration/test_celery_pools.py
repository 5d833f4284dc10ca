"""Every worker pool keeps the trace, loses no span at shutdown and makes none twice: prefork, threads,
solo and gevent (`TRACEHOP_WORKER_POOL`, passed to `celery worker --pool`).

Each pool sets up tracing in a different place (services/telemetry/celery.py says where and why). What
would go wrong is silent: a pool whose processes never set up tracing exports nothing; one that sets up
twice warns "Overriding of current TracerProvider" and may duplicate spans; one that never flushes loses
what its batch processor holds when it stops. So each pool's stack runs with an export delay of a minute
(`OTEL_BSP_SCHEDULE_DELAY=60000`): no process exports anything until it stops, and every span asserted
below reached the trace store through the flush on the way out. One stack per pool, shared by its tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.integration.expected_trees import CREATE_USER_TREE, REPORT_TREE
from tests.integration.fault_tools import Programs
from tests.integration.stack import SHAPES_ENV, RunningStack, start_private_stack, stored_spans
from tracehop.traces.tree import assert_trace_tree

POOLS = ["prefork", "threads", "solo", "gevent"]
# How Celery's banner names each pool ("concurrency: 2 (gevent)").
BANNER_NAMES = {"prefork": "prefork", "threads": "thread", "solo": "solo", "gevent": "gevent"}
OVERRIDE_WARNING = "Overriding of current TracerProvider"


@dataclass
class PoolRun:
    """One pool's stack, after a welcome job and a report job ran and the stack stopped."""

    pool: str
    stack: RunningStack
    welcome_trace_id: str
    report_trace_id: str
    worker_output: str
    worker_pids: set[int]  # the main process of each worker program (the ones supervisord started)


def _post(stack: RunningStack, path: str, body: dict | None = None) -> dict:
    response = stack.http.post(f"{stack.gateway}{path}", json=body or {}, timeout=30)
    assert response.status_code in (201, 202), response.text
    return response.json()


@pytest.fixture(scope="module", params=POOLS)
def pool_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolRun]:
    pool = request.param
    env = {**SHAPES_ENV, "TRACEHOP_WORKER_POOL": pool, "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    running = start_private_stack(tmp_path_factory.mktemp(f"pool-{pool}"), env)
    programs = Programs(running.stack)
    worker_pids = {programs.pid(worker.name) for worker in running.stack.worker_programs}
    try:
        created = _post(
            running, "/api/users", {"name": "Ada", "email": f"ada-{uuid.uuid4().hex[:6]}@example.org"}
        )
        report = _post(running, f"/api/users/{created['user']['id']}/report")
        for job_id in (created["job_id"], report["job_id"]):
            # The result backend answers without any span: the jobs are done, their spans still held.
            assert running.wait_for_job(job_id, timeout=60)["state"] == "SUCCESS"
    finally:
        running.http.close()
        running.stack.stop()
    # Both worker programs' output: each is a node of its own, and either may have run the jobs.
    output = "".join(
        running.stack.layout.program_output(worker.name).read_text()
        for worker in running.stack.worker_programs
    )
    yield PoolRun(pool, running, created["trace_id"], report["trace_id"], output, worker_pids)


def test_the_worker_runs_the_pool_asked_for(pool_run: PoolRun):
    # Guards the parametrisation: Celery's banner names the pool it started.
    assert f"({BANNER_NAMES[pool_run.pool]})" in pool_run.worker_output


def test_welcome_job_tree_is_complete_after_shutdown(pool_run: PoolRun):
    spans = stored_spans(pool_run.stack.stack, pool_run.welcome_trace_id)
    assert_trace_tree(spans, CREATE_USER_TREE)


def test_report_job_tree_is_complete_after_shutdown(pool_run: PoolRun):
    spans = stored_spans(pool_run.stack.stack, pool_run.report_trace_id)
    assert_trace_tree(spans, REPORT_TREE)


def test_one_tracer_provider_per_process(pool_run: PoolRun):
    # The SDK logs this warning when a second provider is installed in a process: set up twice.
    worker_log = (pool_run.stack.log_dir / "worker.log").read_text()
    assert OVERRIDE_WARNING not in worker_log
    assert OVERRIDE_WARNING not in pool_run.worker_output


def test_jobs_are_traced_in_the_process_that_runs_them(pool_run: PoolRun):
    # process.pid on the resource names the process that set up tracing (services/telemetry/setup.py).
    pids = {
        span.resource.get("process.pid")
        for trace_id in (pool_run.welcome_trace_id, pool_run.report_trace_id)
        for span in stored_spans(pool_run.stack.stack, trace_id)
        if span.service == "worker"
    }
    if pool_run.pool == "prefork":
        # In the pool children, never in a main process (that would be setting up before the fork).
        assert pids and not pids & pool_run.worker_pids
    else:
        # In the main process of whichever worker program ran the job.
        assert pids and pids <= pool_run.worker_pids
