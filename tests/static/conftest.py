"""Fixtures of the static checks: the compose stack's files as the tools read them, no Docker engine."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.static import stack_files

# Where real log lines come from, first match wins:
#   1. TRACEHOP_SAMPLE_LOGS: a file, a directory (its *.log) or a glob, e.g. the logs of a CI stack run;
#   2. logs/*.log in the repository, when a local or compose stack has run here;
#   3. DOCUMENTED_LOG_LINES below: lines written from the contract's field list.
SAMPLE_LOGS_ENV = "TRACEHOP_SAMPLE_LOGS"

# One line of each kind our services write, as the contract describes them (flat JSON, one object per line).
DOCUMENTED_LOG_LINES: list[dict[str, Any]] = [
    {
        "ts": "2026-11-25T03:35:01.123456Z",
        "level": "INFO",
        "service": "gateway",
        "message": "request",
        "logger": "services.gateway.app",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "method": "POST",
        "route": "/api/users",
        "path": "/api/users",
        "status": 201,
        "duration_ms": 12.5,
    },
    {
        "ts": "2026-11-25T03:35:01.118000Z",
        "level": "INFO",
        "service": "users",
        "message": "user created",
        "logger": "services.users.routes",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "53995c3f42cd8ad8",
        "user_id": 7,
    },
    {
        "ts": "2026-11-25T03:35:01.201000Z",
        "level": "INFO",
        "service": "worker",
        "message": "welcome e-mail delivered",
        "logger": "services.worker.tasks",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "d75597dee50b0cac",
        "task": "send_welcome_email",
        "job_id": "0c3e5b8e-52a4-4c2b-9d55-5d1f0e3c2a11",
        "user_id": 7,
    },
    {
        "ts": "2026-11-25T03:34:59.000001Z",
        "level": "WARNING",
        "service": "worker",
        "message": "worker ready",
        "logger": "celery.apps.worker",
        "trace_id": "",
        "span_id": "",
    },
]


def _log_files() -> tuple[str, list[Path]]:
    configured = os.environ.get(SAMPLE_LOGS_ENV, "").strip()
    if configured:
        path = Path(configured)
        files = (
            sorted(path.glob("*.log")) if path.is_dir() else [Path(p) for p in sorted(glob.glob(configured))]
        )
        assert files, f"{SAMPLE_LOGS_ENV}={configured!r} matches no log file"
        return f"{SAMPLE_LOGS_ENV}={configured}", files
    files = sorted((stack_files.REPO_ROOT / "logs").glob("*.log"))
    return "logs/*.log", files


@pytest.fixture(scope="session")
def sample_log_lines() -> dict[str, Any]:
    """Log lines to check the collectors' pipelines against: real ones when a run left some, else documented.

    Returns {"source": where they came from, "by_service": {service: [parsed line, ...]}}; lines of files
    named <service>.log are filed under that service.
    """
    source, files = _log_files()
    by_service: dict[str, list[dict[str, Any]]] = {}
    for path in files:
        for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as error:
                pytest.fail(f"{path}:{number} is not one JSON object per line ({error}): {raw[:200]}")
            assert isinstance(line, dict), f"{path}:{number} is JSON but not an object"
            by_service.setdefault(path.stem, []).append(line)
    if not by_service:
        source = "DOCUMENTED_LOG_LINES in tests/static/conftest.py (no real log file found)"
        for line in DOCUMENTED_LOG_LINES:
            by_service.setdefault(line["service"], []).append(line)
    return {"source": source, "by_service": by_service}


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    try:
        return stack_files.resolved_compose_config()
    except stack_files.ComposeConfigError as error:
        # test_compose_file_is_valid_for_docker_compose fails and shows why; the checks that read the
        # resolved file have nothing to read.
        pytest.skip(f"docker-compose.yml does not resolve, nothing to check: {error}")


@pytest.fixture(scope="session")
def compose_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="session")
def dotenv() -> dict[str, str]:
    return stack_files.read_dotenv()
