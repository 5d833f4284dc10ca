"""The worker service keeps running jobs while one of its processes is replaced: on Redis and RabbitMQ.

A killed worker program is started again cold, which on a loaded machine takes longer than the 2 s the
service has to be back in (docs/reliability.md). So the worker service runs as two programs, `worker` and
`worker-b` (tracehop/stack/worker_programs.py). Here jobs flow through the gateway at 10 per second while
`worker`'s main process is SIGKILLed (its pool child follows by its parent-death signal): `worker-b` must
go on completing them with no gap over 2 s while work waits, and every accepted job must end in SUCCESS —
the one the killed node held too (RabbitMQ requeues it at once; on Redis it comes back through the
visibility timeout or the ledger, a few seconds here; a copy finding the job done does nothing).

With one worker program (`TRACEHOP_WORKER_CONCURRENCY=1`) the same test fails on the gap: nothing runs
until supervisord's new process has imported the Celery app.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest
import redis
import requests

from tests.integration.amqp_fixtures import env_for_broker
from tests.integration.fault_tools import Programs
from tests.integration.stack import RunningStack, start_private_stack, stop_in_background

ENV = {
    "GUNICORN_WORKERS": "2",
    "OTEL_BSP_SCHEDULE_DELAY": "500",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    # The service's pool: one process per worker program.
    "TRACEHOP_WORKER_CONCURRENCY": "2",
    # The killed node's job comes back within seconds, not the default hour.
    "TRACEHOP_VISIBILITY_TIMEOUT_S": "5",
    "TRACEHOP_JOB_START_DEADLINE_S": "5",
    "TRACEHOP_RECONCILE_INTERVAL_S": "1",
    "TRACEHOP_JOB_CLAIM_LEASE_S": "3",
}
RATE_PER_S = 10.0
BEFORE_KILL_S = 4.0
AFTER_KILL_S = 8.0
MAX_GAP_S = 2.0


@pytest.fixture(scope="module", params=["redis", "amqp"])
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    env = env_for_broker(request, ENV)
    running = start_private_stack(tmp_path_factory.mktemp(f"failover-{request.param}"), env)
    try:
        yield running
    finally:
        stop_in_background(running.stack)


@dataclass
class Accepted:
    job_id: str
    at: float  # wall clock, when the gateway answered 201


def send_jobs(
    stack: RunningStack, stop: threading.Event, accepted: list[Accepted], failed: list[str]
) -> None:
    """POST /api/users at RATE_PER_S until `stop`; every answer that is not 201 is a failure."""
    started = time.monotonic()
    sent = 0
    while not stop.is_set():
        delay = started + sent / RATE_PER_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sent += 1
        try:
            response = stack.post_user(name="Failover")
        except requests.RequestException as error:  # the gateway must answer: recorded, not raised here
            failed.append(f"{type(error).__name__}: {error}")
            continue
        if response.status_code == 201:
            accepted.append(Accepted(response.json()["job_id"], time.time()))
        else:
            failed.append(f"{response.status_code} {response.text[:200]}")


def completion_times(store: redis.Redis, job_ids: list[str]) -> dict[str, float]:
    """When each job's result was stored (Celery's `date_done`, UTC, written by the worker that ran it)."""
    times = {}
    for job_id, raw in zip(job_ids, store.mget([f"celery-task-meta-{j}" for j in job_ids]), strict=True):
        meta = json.loads(raw)
        assert meta["status"] == "SUCCESS", meta
        times[job_id] = datetime.fromisoformat(meta["date_done"]).timestamp()
    return times


def longest_wait_without_a_completion(
    accepted: list[Accepted], done: dict[str, float], since: float, until: float
) -> float:
    """The longest time in [since, until] during which some accepted job waited and none completed:
    an idle gateway (no job waiting) is not the worker service's gap."""
    completions = sorted(at for at in done.values() if since <= at <= until)
    longest = 0.0
    for previous, following in zip([since, *completions], [*completions, until], strict=True):
        waiting = [job.at for job in accepted if job.at < following and done[job.job_id] > previous]
        if waiting:
            longest = max(longest, following - max(previous, min(waiting)))
    return longest


def test_a_killed_worker_process_leaves_no_gap_and_loses_no_job(stack: RunningStack):
    programs = Programs(stack.stack)
    assert "worker-b" in stack.stack.components, "the worker service must run as two programs"
    accepted: list[Accepted] = []
    failed: list[str] = []
    stop = threading.Event()
    sender = threading.Thread(target=send_jobs, args=(stack, stop, accepted, failed), daemon=True)
    sender.start()
    time.sleep(BEFORE_KILL_S)
    killed = programs.pid("worker")
    killed_at = time.time()
    os.kill(killed, signal.SIGKILL)  # the main process only, as an OOM kill would
    time.sleep(AFTER_KILL_S)
    stop.set()
    sender.join(timeout=30)
    load_ended = time.time()
    programs.wait_running("worker", other_than=killed)  # supervisord replaced it meanwhile

    assert failed == []
    assert len(accepted) > RATE_PER_S * (BEFORE_KILL_S + AFTER_KILL_S) / 2
    # None lost: every accepted job ends in SUCCESS (the killed node's through the broker or the ledger).
    for job in accepted:
        assert stack.wait_for_job(job.job_id, timeout=60)["state"] == "SUCCESS", job
    store = redis.Redis.from_url(stack.stack.redis_url)
    done = completion_times(store, [job.job_id for job in accepted])

    gap = longest_wait_without_a_completion(accepted, done, killed_at, load_ended)
    assert gap <= MAX_GAP_S, f"jobs waited {gap:.2f} s with none completing after the kill"
