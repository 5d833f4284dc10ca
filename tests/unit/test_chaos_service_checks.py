"""`make chaos`'s worker service check: jobs completing on any node, read from the nodes' /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from tracehop.bench import service_checks


def page(succeeded: int, failed: int = 0) -> str:
    """A worker node's /metrics as prometheus_client writes it."""
    registry = CollectorRegistry()
    jobs = Counter("tracehop_jobs", "jobs", ["task", "state"], registry=registry)
    jobs.labels("send_welcome_email", "succeeded").inc(succeeded)
    jobs.labels("send_welcome_email", "failed").inc(failed)
    return generate_latest(registry).decode()


def test_every_job_a_node_counted_is_summed():
    assert service_checks.jobs_total(page(7, 2)) == 9
    assert service_checks.jobs_total("# no jobs yet\n") == 0


def test_progress_is_a_node_counting_more_jobs_a_node_back_from_a_restart_included():
    before = {"worker": 10.0, "worker-b": 4.0}
    assert not service_checks.progressed(before, {"worker-b": 4.0})  # worker killed, worker-b idle
    assert service_checks.progressed(before, {"worker-b": 5.0})  # worker-b ran one
    assert service_checks.progressed(
        {"worker-b": 4.0}, {"worker": 1.0, "worker-b": 4.0}
    )  # restarted, ran one
    assert not service_checks.progressed(
        before, {"worker": 3.0, "worker-b": 4.0}
    )  # restarted: fewer is no job


def test_each_program_gets_its_services_check():
    jobs = object.__new__(service_checks.JobsComplete)

    def readiness():
        return None

    assert service_checks.service_check("worker-b", readiness, jobs) == jobs.check
    assert service_checks.service_check("users", readiness, jobs) is readiness
    # beat's probe passes only for the process supervisord runs now, once it has loaded its schedule.
    assert service_checks.service_check("beat", readiness, jobs) is readiness
