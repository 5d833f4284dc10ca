"""Resource usage per process from /proc: this process, its children, and the gunicorn wiring."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from services.metrics.process_metrics import ProcessTreeCollector, read_usage

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc: Linux only")


def sample(registry: CollectorRegistry, name: str, pid: int, role: str) -> float | None:
    return registry.get_sample_value(name, {"pid": str(pid), "role": role})


@pytest.fixture
def registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ProcessTreeCollector())
    return registry


@pytest.fixture
def child() -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def vm_rss_bytes() -> int:
    """The kernel's own summary of this process's resident memory (another file than the collector's)."""
    with open("/proc/self/status") as status:
        (line,) = [line for line in status if line.startswith("VmRSS:")]
    return int(line.split()[1]) * 1024


def test_this_process_and_its_child_are_reported(registry, child):
    me = os.getpid()
    assert sample(registry, "process_cpu_seconds_total", me, "main") > 0
    assert abs(sample(registry, "process_resident_memory_bytes", me, "main") - vm_rss_bytes()) < 4 * 2**20
    assert sample(registry, "process_open_fds", me, "main") >= 3
    assert sample(registry, "process_resident_memory_bytes", child.pid, "child") > 0
    # sleep holds exactly what it inherited: stdin, stdout and stderr (Popen closes the rest).
    assert sample(registry, "process_open_fds", child.pid, "child") == 3
    text = generate_latest(registry).decode()
    assert f'process_cpu_seconds_total{{pid="{child.pid}",role="child"}}' in text


def test_memory_cpu_and_fds_follow_what_the_process_does(registry):
    me = os.getpid()
    rss_before = sample(registry, "process_resident_memory_bytes", me, "main")
    block = b"\x01" * (64 * 2**20)  # written, so resident (a zeroed allocation may stay unmapped)
    assert sample(registry, "process_resident_memory_bytes", me, "main") >= rss_before + 48 * 2**20
    del block

    cpu_before = sample(registry, "process_cpu_seconds_total", me, "main")
    started = time.process_time()
    while time.process_time() - started < 0.1:  # busy, measured by CPU time: no fixed sleep
        pass
    assert sample(registry, "process_cpu_seconds_total", me, "main") >= cpu_before + 0.05

    fds_before = sample(registry, "process_open_fds", me, "main")
    opened = [os.open(os.devnull, os.O_RDONLY) for _ in range(10)]
    try:
        assert sample(registry, "process_open_fds", me, "main") >= fds_before + 10
    finally:
        for fd in opened:
            os.close(fd)


def test_a_process_that_is_gone_is_simply_absent():
    process = subprocess.Popen(["true"])
    process.wait()
    assert read_usage(process.pid) is None


def test_under_gunicorn_the_tree_is_rooted_at_the_master(monkeypatch, tmp_path, valkey_url):
    # A gunicorn worker serves /metrics from the multiprocess directory, rooted at its parent (the master).
    # Here this test process plays the worker, its parent the master.
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    from services.users import create_app

    client = create_app({"TESTING": True, "REDIS_URL": valkey_url}).test_client()
    text = client.get("/metrics").get_data(as_text=True)
    assert f'process_resident_memory_bytes{{pid="{os.getppid()}",role="master"}}' in text
    assert f'process_resident_memory_bytes{{pid="{os.getpid()}",role="worker"}}' in text
    # (The summed request metrics need prometheus_client in multiprocess mode from import time: the
    # integration tests check them, against real gunicorn.)


def test_without_gunicorn_the_app_reports_its_own_process(users_client):
    text = users_client.get("/metrics").get_data(as_text=True)
    assert f'process_open_fds{{pid="{os.getpid()}",role="main"}}' in text
