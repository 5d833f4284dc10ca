"""Every address `make up` prints answers at `/` with something useful, the trace viewer listed first."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from tests.integration.stack import RunningStack
from tracehop.stack.view import urls_table

pytestmark = pytest.mark.integration


def test_the_viewer_is_the_first_address_and_every_address_answers(running_stack: RunningStack):
    urls = running_stack.stack.urls
    printed = io.StringIO()
    Console(file=printed, width=200).print(urls_table(urls))
    rows = [line for line in printed.getvalue().splitlines() if "http://" in line or "redis://" in line]
    assert "trace viewer" in rows[0] and f"{urls['query']}/" in rows[0]

    http = running_stack.http
    viewer = http.get(urls["query"] + "/", timeout=10)
    assert viewer.status_code == 200 and "Find traces" in viewer.text
    gateway = http.get(urls["gateway"] + "/", timeout=10).json()
    assert gateway["openapi"] == "/openapi.json" and "POST /api/users" in gateway["routes"]
    assert http.get(urls["gateway"] + gateway["openapi"], timeout=10).json()["openapi"].startswith("3.")
    users = http.get(urls["users"] + "/", timeout=10).json()
    assert "POST /users" in users["routes"]
    assert http.get(urls["otlp"] + "/", timeout=10).json()["traces"] == "POST /v1/traces"
    assert "process_cpu_seconds_total" in http.get(urls["worker_metrics"], timeout=10).text
    if "prometheus" in urls:
        assert http.get(urls["prometheus"] + "/", timeout=10).status_code == 200
