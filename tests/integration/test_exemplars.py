"""Exemplars: from a latency bucket to the trace of a request (or job) that fell into it.

The services run prometheus_client in multiprocess mode (gunicorn workers, prefork children), which keeps
no exemplars of its own; services/metrics/exemplars.py records them per process and /metrics attaches
them. Here real traffic goes through the stack, and the exemplars must lead to traces the trace store has.
"""

from __future__ import annotations

import re
import time

import requests

from tests.integration.stack import RunningStack
from tests.waiting import eventually

OPENMETRICS = "application/openmetrics-text;version=1.0.0"
TIMEOUT_S = 30.0


def make_traffic(stack: RunningStack, count: int = 3) -> set[str]:
    """Create users (each also queues a welcome e-mail job); the trace ids of those requests."""
    trace_ids = set()
    job_ids = []
    for _ in range(count):
        response = stack.post_user(name="Grace Hopper")
        assert response.status_code == 201, response.text
        trace_ids.add(response.json()["trace_id"])
        job_ids.append(response.json()["job_id"])
    for job_id in job_ids:
        assert stack.wait_for_job(job_id)["state"] == "SUCCESS"
    return trace_ids


def exemplar_trace_ids(page: str, series_prefix: str) -> set[str]:
    """Trace ids of the exemplars on the lines of an OpenMetrics page that start with `series_prefix`."""
    return {
        found.group(1)
        for line in page.splitlines()
        if line.startswith(series_prefix)
        and (found := re.search(r' # \{[^}]*trace_id="([0-9a-f]{32})"', line))
    }


def poll(fetch, until, what: str):
    """What `fetch()` answers once `until` holds of it (exemplars are written about once a second)."""

    def fetched_and_found():
        value = fetch()
        return value if until(value) else None

    return eventually(fetched_and_found, TIMEOUT_S, what, interval=0.25)


def test_metrics_pages_carry_exemplars_of_recent_requests(running_stack: RunningStack):
    ours = make_traffic(running_stack)
    urls = running_stack.stack.urls

    def page(url: str) -> str:
        return requests.get(url, headers={"Accept": OPENMETRICS}, timeout=5).text

    # Each process writes its exemplars about once a second: poll.
    # users served a request of the same traces; the worker ran their jobs.
    # Either worker node ran each job: its exemplars are on one of the two pages.
    worker_pages = running_stack.stack.worker_metrics_urls
    for url, histogram in [
        (f"{urls['gateway']}/metrics", "http_request_duration_seconds_bucket"),
        (f"{urls['users']}/metrics", "http_request_duration_seconds_bucket"),
        (" + ".join(worker_pages), "tracehop_job_duration_seconds_bucket"),
    ]:
        poll(
            lambda url=url: "".join(page(one) for one in url.split(" + ")),
            lambda text, histogram=histogram: exemplar_trace_ids(text, histogram) & ours,
            f"an exemplar of one of our traces on {histogram} at {url}",
        )

    # Scrapers that do not ask for OpenMetrics get the plain format, without exemplars.
    plain = requests.get(f"{urls['gateway']}/metrics", timeout=5)
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert "http_request_duration_seconds_bucket" in plain.text and "trace_id" not in plain.text


def test_prometheus_exemplars_lead_to_traces_in_the_trace_store(
    running_stack: RunningStack, prometheus_url: str
):
    ours = make_traffic(running_stack)
    started = time.time() - 60

    def exemplars(metric: str) -> list[dict]:
        response = requests.get(
            f"{prometheus_url}/api/v1/query_exemplars",
            params={"query": metric, "start": started, "end": time.time() + 60},
            timeout=5,
        )
        response.raise_for_status()
        return [
            {**exemplar, "series": series["seriesLabels"]}
            for series in response.json()["data"]
            for exemplar in series["exemplars"]
        ]

    def trace_ids(found: list[dict], job: str | None = None) -> set[str]:
        return {e["labels"]["trace_id"] for e in found if job is None or e["series"]["job"] == job}

    # Both services served our requests: wait until each one's exemplars of them were scraped.
    http = poll(
        lambda: exemplars("http_request_duration_seconds_bucket"),
        lambda found: trace_ids(found, "gateway") & ours and trace_ids(found, "users") & ours,
        "exemplars of our requests' traces from the gateway and users, in Prometheus",
    )
    ours_in_gateway = [e for e in http if e["labels"]["trace_id"] in ours and e["series"]["job"] == "gateway"]
    assert {e["series"]["url_rule"] for e in ours_in_gateway} == {"/api/users"}
    assert {(e["series"]["method"], e["series"]["status"]) for e in ours_in_gateway} == {("POST", "201")}
    for exemplar in http:
        # The exemplar sits on the bucket its value falls into (Prometheus renders le as a float).
        assert float(exemplar["value"]) <= float(exemplar["series"]["le"])

    jobs = poll(
        lambda: exemplars("tracehop_job_duration_seconds_bucket"),
        lambda found: trace_ids(found) & ours,
        "exemplars of our jobs' traces in Prometheus",
    )

    # Every exemplar is a link that works: its trace is in the trace store (the store may still be
    # receiving the last spans, hence the wait).
    for trace_id in trace_ids(http) | trace_ids(jobs):
        assert running_stack.traces.wait_for_trace(trace_id, timeout=TIMEOUT_S), trace_id
