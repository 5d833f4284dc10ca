"""Metrics: /metrics on every service, scraped by the real Prometheus of the local stack."""

from __future__ import annotations

import time

import requests

from tests.integration.conftest import RunningStack


def test_every_service_serves_metrics(running_stack: RunningStack):
    urls = running_stack.stack.urls
    gateway = requests.get(f"{urls['gateway']}/metrics", timeout=5).text
    users = requests.get(f"{urls['users']}/metrics", timeout=5).text
    worker = requests.get(urls["worker_metrics"], timeout=5).text
    assert "http_request_duration_seconds_bucket" in gateway
    assert "http_request_duration_seconds_bucket" in users
    assert "tracehop_jobs_total" in worker


def test_worker_job_metrics_count_across_prefork_children(running_stack: RunningStack):
    def succeeded() -> float:
        text = requests.get(running_stack.stack.urls["worker_metrics"], timeout=5).text
        for line in text.splitlines():
            if line.startswith('tracehop_jobs_total{state="succeeded",task="send_welcome_email"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = succeeded()
    job_ids = []
    for index in range(4):
        response = running_stack.http.post(
            f"{running_stack.gateway}/api/users", json={"name": "M", "email": f"m{index}@example.org"}, timeout=10
        )
        job_ids.append(response.json()["job_id"])
    for job_id in job_ids:
        assert running_stack.wait_for_job(job_id)["state"] == "SUCCESS"
    assert succeeded() == before + 4


def test_prometheus_scrapes_every_service(running_stack: RunningStack, prometheus_url: str):
    deadline = time.monotonic() + 30
    while True:
        result = requests.get(f"{prometheus_url}/api/v1/query", params={"query": "up"}, timeout=5).json()
        up = {sample["metric"]["job"]: sample["value"][1] for sample in result["data"]["result"]}
        if up == {"gateway": "1", "users": "1", "worker": "1"} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert up == {"gateway": "1", "users": "1", "worker": "1"}
