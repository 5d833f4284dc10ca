"""Metrics: /metrics on every service, scraped by the real Prometheus of the local stack."""

from __future__ import annotations

import subprocess
import time

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.stack import RunningStack

RESOURCE_METRICS = ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds")


def test_every_service_serves_metrics(running_stack: RunningStack):
    # One request and its job first, so the test holds whichever test of the session runs before it.
    created = running_stack.post_user(name="M")
    assert running_stack.wait_for_job(created.json()["job_id"])["state"] == "SUCCESS"
    urls = running_stack.stack.urls
    gateway = requests.get(f"{urls['gateway']}/metrics", timeout=5).text
    users = requests.get(f"{urls['users']}/metrics", timeout=5).text
    # Either worker node may have run the job: the service's counts are both nodes' pages.
    worker = "".join(requests.get(url, timeout=5).text for url in running_stack.stack.worker_metrics_urls)
    assert "http_request_duration_seconds_bucket" in gateway
    assert "http_request_duration_seconds_bucket" in users
    assert "tracehop_jobs_total" in worker


def test_worker_job_metrics_count_across_prefork_children(running_stack: RunningStack):
    def succeeded() -> float:
        total = 0.0
        for url in running_stack.stack.worker_metrics_urls:  # both worker nodes, as Prometheus sums them
            for line in requests.get(url, timeout=5).text.splitlines():
                if line.startswith('tracehop_jobs_total{state="succeeded",task="send_welcome_email"}'):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    before = succeeded()
    job_ids = []
    for index in range(4):
        response = running_stack.post_user(f"m{index}@example.org", name="M")
        job_ids.append(response.json()["job_id"])
    for job_id in job_ids:
        assert running_stack.wait_for_job(job_id)["state"] == "SUCCESS"
    assert succeeded() == before + 4


def test_prometheus_scrapes_every_service(running_stack: RunningStack, prometheus_url: str):
    # The worker job has two targets: the worker service's two nodes.
    wanted = {"gateway": ["1"], "users": ["1"], "worker": ["1", "1"]}
    deadline = time.monotonic() + 30
    while True:
        result = requests.get(f"{prometheus_url}/api/v1/query", params={"query": "up"}, timeout=5).json()
        up: dict[str, list[str]] = {}
        for sample in result["data"]["result"]:
            up.setdefault(sample["metric"]["job"], []).append(sample["value"][1])
        if up == wanted or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert up == wanted


def _resources(url: str) -> dict[str, dict[tuple[int, str], float]]:
    """Per-process resource samples of one /metrics page: {metric: {(pid, role): value}}."""
    found: dict[str, dict[tuple[int, str], float]] = {name: {} for name in RESOURCE_METRICS}
    for family in text_string_to_metric_families(requests.get(url, timeout=5).text):
        if family.name in found:
            for sample in family.samples:
                found[family.name][(int(sample.labels["pid"]), sample.labels["role"])] = sample.value
    return found


def _parent_and_command(pid: int) -> tuple[int, str]:
    with open(f"/proc/{pid}/stat") as file:
        ppid = int(file.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{pid}/cmdline", "rb") as file:
        return ppid, file.read().replace(b"\0", b" ").decode()


def test_every_process_of_every_service_reports_its_resources(running_stack: RunningStack):
    # Multiprocess mode drops prometheus_client's own process_* metrics; ours describe each process of the
    # service: gunicorn's master and workers, Celery's main process and prefork children.
    urls = running_stack.stack.urls
    pages = {
        "gateway": (f"{urls['gateway']}/metrics", "master", "worker", "gunicorn"),
        "users": (f"{urls['users']}/metrics", "master", "worker", "gunicorn"),
        # Each worker node's page describes its own processes (main and children).
        "worker": (urls["worker_metrics"], "main", "child", "celery"),
        "worker-b": (urls["worker_b_metrics"], "main", "child", "celery"),
    }
    for service, (url, root_role, child_role, command) in pages.items():
        resources = _resources(url)
        processes = set(resources["process_resident_memory_bytes"])
        roots = [pid for pid, role in processes if role == root_role]
        children = [pid for pid, role in processes if role == child_role]
        assert len(roots) == 1 and children, f"{service}: {sorted(processes)}"
        assert command in _parent_and_command(roots[0])[1], service
        # Exactly the root's children, as `ps` (not our /proc reader) sees them.
        listed = subprocess.run(["ps", "--ppid", str(roots[0]), "-o", "pid="], capture_output=True, text=True)
        assert sorted(children) == sorted(int(pid) for pid in listed.stdout.split()), service
        for name in RESOURCE_METRICS:
            assert set(resources[name]) == processes, f"{service}: {name}"
        assert all(value > 1_000_000 for value in resources["process_resident_memory_bytes"].values())
        assert all(value > 0 for value in resources["process_open_fds"].values())
