"""Where the one Celery wiring function sets up tracing, by pool: in each prefork child, or in the main
process for the pools that run jobs there (tests/integration/test_celery_pools.py runs each for real)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import concurrency

from services.telemetry.celery import forks_children, refuse_unpatched_green_pool


@pytest.mark.parametrize(
    ("pool", "forks"),
    [("prefork", True), ("threads", False), ("solo", False), ("gevent", False), (None, True)],
)
def test_only_prefork_runs_jobs_in_forked_children(pool: str | None, forks: bool):
    # At worker_init the pool is a name (configuration) or a class (the command line hands over a class).
    assert forks_children(SimpleNamespace(pool_cls=pool)) is forks
    if pool is not None:
        as_class = SimpleNamespace(pool_cls=concurrency.get_implementation(pool))
        assert forks_children(as_class) is forks


def test_an_unpatched_gevent_pool_is_refused():
    # This test process never monkey-patched: what a worker with worker_pool="gevent" in its
    # configuration (and no --pool gevent on the command line) would be.
    # SystemExit: Celery swallows an ordinary exception raised by a signal receiver.
    with pytest.raises(SystemExit, match=r"choose it on the command line \(celery worker --pool gevent\)"):
        refuse_unpatched_green_pool(SimpleNamespace(pool_cls="gevent"))


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_pools_without_monkey_patches_are_accepted(pool: str):
    refuse_unpatched_green_pool(SimpleNamespace(pool_cls=pool))
