"""The design document's examples, true for us: its PromQL, as written, against the real Prometheus of the
local stack, and the access-log fields its LogQL examples read (docs/instrumentation-patterns.md).

Each query is polled with a deadline: a rate needs two scrapes of a counter that moved between them, so
traffic is sent on every round until the query answers (the stack scrapes every second).
"""

from __future__ import annotations

import time

import pytest
import requests

from tests.integration.stack import RunningStack

# Exactly as the design document writes them, each with what "returns data" means for it.
DESIGN_PROMQL = {
    # every scrape target is up
    "up": lambda result: (
        {(s["metric"]["job"], s["value"][1]) for s in result}
        == {("gateway", "1"), ("users", "1"), ("worker", "1")}
    ),
    # requests per second, all services together
    "sum(rate(http_requests_total[5m]))": lambda result: (
        len(result) == 1 and float(result[0]["value"][1]) > 0
    ),
    # the p95 request duration: NaN while no bucket has moved yet; far below any timeout of ours
    "histogram_quantile(0.95, sum(rate(http_request_duration_seconds_bucket[5m])) by (le))": lambda result: (
        len(result) == 1 and 0 < float(result[0]["value"][1]) < 30
    ),
}


def query(prometheus_url: str, expression: str) -> list[dict]:
    response = requests.get(f"{prometheus_url}/api/v1/query", params={"query": expression}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]


@pytest.mark.parametrize("expression", DESIGN_PROMQL)
def test_the_design_documents_promql_returns_data(
    running_stack: RunningStack, prometheus_url: str, expression: str
):
    returns_data = DESIGN_PROMQL[expression]
    deadline = time.monotonic() + 45
    while True:
        # Traffic on every round, so counters keep moving between scrapes.
        running_stack.http.get(f"{running_stack.gateway}/api/users/1", timeout=5)
        result = query(prometheus_url, expression)
        if returns_data(result):
            break
        assert time.monotonic() < deadline, f"{expression} returned no data: {result}"
        time.sleep(0.5)


def test_access_log_lines_carry_what_the_logql_examples_read(running_stack: RunningStack):
    # `| json | status >= 500`, `| json | route="…"`, `| unwrap duration_ms`, `| level="ERROR"` …
    response = running_stack.post_user()
    trace_id = response.json()["trace_id"]
    (line,) = running_stack.wait_for_log_lines(
        "gateway", lambda line: line.get("trace_id") == trace_id and line.get("message") == "request"
    )
    assert line["level"] == "INFO" and line["service"] == "gateway"
    assert (line["method"], line["route"], line["status"]) == ("POST", "/api/users", 201)
    assert isinstance(line["duration_ms"], float | int) and line["duration_ms"] > 0
