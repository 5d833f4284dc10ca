"""One request through the compose stack, read back from every backend: Jaeger, Loki, Prometheus, Grafana.

The same span tree as the core integration tests (their expected text, imported), this time through real
Jaeger's query API v3; the request's log lines from all three services in Loki, found by the trace id
kept as structured metadata; every Prometheus job up; every dashboard query answering.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import pytest

from services.web.settings import SERVICES
from tests.integration.expected_trees import CREATE_USER_SPANS, CREATE_USER_TREE
from tests.stack.conftest import ComposeStack, poll
from tests.static import stack_files
from tracehop.slow_clients import slow_client_phase
from tracehop.traces.query import TraceQuery
from tracehop.traces.tree import assert_trace_tree

# One span per line of the expected tree: wait for all of them before comparing.


@pytest.fixture(scope="module")
def created_user(compose_stack: ComposeStack) -> dict[str, Any]:
    """ONE POST /api/users, its job finished: the request every test below follows."""
    response = compose_stack.http.post(
        f"{compose_stack.gateway}/api/users",
        json={"name": "Ada Lovelace", "email": f"ada-{uuid.uuid4().hex[:8]}@example.org"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    body = response.json()

    def job_done() -> dict | None:
        job = compose_stack.get_json(f"{compose_stack.gateway}/api/jobs/{body['job_id']}")
        return job if job["state"] in ("SUCCESS", "FAILURE") else None

    assert poll(f"job {body['job_id']} to finish", job_done)["state"] == "SUCCESS"
    return body


def test_jaeger_holds_the_exact_span_tree(compose_stack: ComposeStack, created_user: dict[str, Any]):
    trace_id = created_user["trace_id"]
    spans = TraceQuery(compose_stack.jaeger).wait_for_trace(
        trace_id, until=lambda spans: len(spans) >= CREATE_USER_SPANS, timeout=60
    )
    assert_trace_tree(spans, CREATE_USER_TREE)


def test_loki_returns_the_trace_lines_of_all_three_services(
    compose_stack: ComposeStack, created_user: dict[str, Any]
):
    trace_id = created_user["trace_id"]
    # trace_id is structured metadata: a label filter after the stream selector, not a stream label.
    query = f'{{job="tracehop"}} | trace_id="{trace_id}"'
    now_ns = time.time_ns()

    def lines_by_service() -> dict[str, list[dict]] | None:
        result = compose_stack.get_json(
            f"{compose_stack.loki}/loki/api/v1/query_range",
            query=query,
            start=str(now_ns - 15 * 60 * 10**9),
            end=str(now_ns + 5 * 60 * 10**9),
            limit="1000",
            direction="forward",
        )["data"]["result"]
        found: dict[str, list[dict]] = {}
        for stream in result:
            for _, line in stream["values"]:
                found.setdefault(stream["stream"]["service"], []).append(json.loads(line))
        return found if set(SERVICES) <= set(found) else None

    found = poll(f"Loki lines of trace {trace_id} from {', '.join(SERVICES)}", lines_by_service)
    for service, lines in found.items():
        for line in lines:
            assert line["trace_id"] == trace_id and line["service"] == service, line
    assert any(line["message"] == "request" for line in found["gateway"]), "the gateway's access-log line"


def test_loki_indexes_few_labels_and_not_the_trace_id(
    compose_stack: ComposeStack, created_user: dict[str, Any]
):
    labels = set(compose_stack.get_json(f"{compose_stack.loki}/loki/api/v1/labels")["data"])
    assert {"job", "service", "level", "env"} <= labels
    assert "trace_id" not in labels, (
        "trace_id must be structured metadata: a label per trace explodes the index"
    )


def test_prometheus_scrapes_every_job(compose_stack: ComposeStack):
    jobs = {job for job, _ in stack_files.prometheus_targets()}

    def all_up() -> dict[str, str] | None:
        result = compose_stack.get_json(f"{compose_stack.prometheus}/api/v1/query", query="up")["data"][
            "result"
        ]
        values = {sample["metric"]["job"]: sample["value"][1] for sample in result}
        return values if all(values.get(job) == "1" for job in jobs) else None

    poll(f"up == 1 for every job ({', '.join(sorted(jobs))})", all_up)


def test_every_dashboard_promql_returns_data(compose_stack: ComposeStack, created_user: dict[str, Any]):
    # A retried job, so the retry counter has a series too (the greylisted domain defers the first attempt).
    response = compose_stack.http.post(
        f"{compose_stack.gateway}/api/users",
        json={"name": "Grace Hopper", "email": f"grace-{uuid.uuid4().hex[:8]}@greylisted.example"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    queries = [
        (where, stack_files.grafana_to_prometheus(expr))
        for dashboard in stack_files.dashboards().values()
        for where, expr in stack_files.dashboard_queries(dashboard, "prometheus")
    ]
    for where, expr in queries:

        def answered(expr: str = expr) -> list | None:
            body = compose_stack.get_json(f"{compose_stack.prometheus}/api/v1/query", query=expr)
            return body["data"]["result"] or None

        poll(f"{where} to return data ({expr})", answered)


def test_every_dashboard_logql_runs(compose_stack: ComposeStack, created_user: dict[str, Any]):
    now_ns = time.time_ns()
    for dashboard in stack_files.dashboards().values():
        for where, expr in stack_files.dashboard_queries(dashboard, "loki"):
            expr = stack_files.grafana_to_prometheus(expr)
            response = compose_stack.http.get(
                f"{compose_stack.loki}/loki/api/v1/query_range",
                params={
                    "query": expr,
                    "start": str(now_ns - 15 * 60 * 10**9),
                    "end": str(now_ns),
                    "step": "15",
                },
                timeout=10,
            )
            assert response.status_code == 200, f"{where}: Loki rejects {expr}: {response.text[:300]}"


def test_grafana_serves_the_overview_dashboard_anonymously(compose_stack: ComposeStack):
    body = compose_stack.get_json(f"{compose_stack.grafana}/api/dashboards/uid/tracehop-overview")
    assert body["dashboard"]["title"] == "tracehop overview"


def test_grafana_datasources_answer(compose_stack: ComposeStack):
    password = os.environ.get("GRAFANA_ADMIN_PASSWORD") or _from_env_local("GRAFANA_ADMIN_PASSWORD")
    if not password:
        pytest.skip("GRAFANA_ADMIN_PASSWORD is neither in the environment nor in .env.local")
    for datasource in stack_files.grafana_datasources():
        response = compose_stack.http.get(
            f"{compose_stack.grafana}/api/datasources/uid/{datasource['uid']}/health",
            auth=("admin", password),
            timeout=30,
        )
        assert response.status_code == 200, (
            f"{datasource['name']}: {response.status_code} {response.text[:300]}"
        )


def _from_env_local(key: str) -> str | None:
    path = stack_files.REPO_ROOT / ".env.local"
    if not path.exists():
        return None
    return stack_files.read_dotenv(path).get(key) or None


def test_the_public_port_holds_against_slow_clients(compose_stack: ComposeStack):
    # The same phase as tests/integration/test_slow_clients.py, against the compose gateway's public port.
    phase = slow_client_phase(compose_stack.gateway, duration_s=6.0, probe_timeout_s=5.0)
    assert phase.opened == 512
    assert phase.holds(limit_s=1.0), phase
