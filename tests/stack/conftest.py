"""`make test-stack`: checks against a RUNNING Docker Compose stack (`make up`), never part of `make test`.

pyproject.toml's norecursedirs keeps this directory out of a plain `pytest`; run it as `pytest tests/stack`.
Without a reachable stack the session stops at once, says what it tried, and exits non-zero: a green
`make test-stack` always means the checks ran.

Every address can be overridden (a stack published elsewhere, or behind TRACEHOP_BIND_ADDRESS):
TRACEHOP_STACK_GATEWAY_URL, TRACEHOP_STACK_JAEGER_URL, TRACEHOP_STACK_LOKI_URL,
TRACEHOP_STACK_PROMETHEUS_URL, TRACEHOP_STACK_GRAFANA_URL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import requests

from tests.waiting import eventually

T = TypeVar("T")
NOT_YET = (requests.RequestException, AssertionError, KeyError, ValueError)

# How long to wait for the stack to answer at all, and for data to show up in each backend.
REACHABLE_TIMEOUT_S = float(os.environ.get("TRACEHOP_STACK_REACHABLE_TIMEOUT_S", "10"))
DATA_TIMEOUT_S = float(os.environ.get("TRACEHOP_STACK_DATA_TIMEOUT_S", "90"))


@dataclass(frozen=True)
class ComposeStack:
    gateway: str
    jaeger: str
    loki: str
    prometheus: str
    grafana: str
    http: requests.Session

    def get_json(self, url: str, **params: Any) -> Any:
        response = self.http.get(url, params=params, timeout=10)
        response.raise_for_status()
        return response.json()


def _url(name: str, default: str) -> str:
    return os.environ.get(f"TRACEHOP_STACK_{name}_URL", default).rstrip("/")


# What answers only when the compose stack (not the embedded local stack) is up. Loki in particular:
# the local stack has no Loki, so a local stack on the same ports is not mistaken for this one.
READINESS = {
    "gateway": "/healthz",
    "jaeger": "/api/v3/services",
    "loki": "/ready",
    "prometheus": "/-/ready",
    "grafana": "/api/health",
}


def _unreachable(stack: ComposeStack) -> list[str]:
    problems = []
    for name, path in READINESS.items():
        url = getattr(stack, name) + path
        try:
            response = stack.http.get(url, timeout=3)
            if response.status_code != 200:
                problems.append(f"{name}: GET {url} -> {response.status_code}")
        except requests.RequestException as error:
            problems.append(f"{name}: GET {url} -> {type(error).__name__}")
    return problems


@pytest.fixture(scope="session", autouse=True)
def compose_stack() -> Iterator[ComposeStack]:
    http = requests.Session()
    http.trust_env = False  # loopback traffic must not go through a proxy from the environment
    stack = ComposeStack(
        gateway=_url("GATEWAY", "http://127.0.0.1:8080"),
        jaeger=_url("JAEGER", "http://127.0.0.1:16686"),
        loki=_url("LOKI", "http://127.0.0.1:3100"),
        prometheus=_url("PROMETHEUS", "http://127.0.0.1:9090"),
        grafana=_url("GRAFANA", "http://127.0.0.1:3000"),
        http=http,
    )
    deadline = time.monotonic() + REACHABLE_TIMEOUT_S
    while problems := _unreachable(stack):
        if time.monotonic() > deadline:
            pytest.exit(
                "no Docker Compose stack is reachable, so nothing was checked:\n  "
                + "\n  ".join(problems)
                + "\nStart it with `make up` (docker compose) and run `make test-stack` again."
                + "\n(The embedded local stack has no Loki or Grafana: these checks need the compose stack.)",
                returncode=1,
            )
        time.sleep(0.5)
    yield stack
    http.close()


def poll(what: str, attempt: Callable[[], T | None]) -> T:
    """`eventually`, with this layer's deadline for data to reach a backend, and the errors a backend
    that is still receiving answers with (no data yet, a half-filled answer) counted as "not yet"."""
    return eventually(attempt, DATA_TIMEOUT_S, what, interval=1.0, ignoring=NOT_YET)
