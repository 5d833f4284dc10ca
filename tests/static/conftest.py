"""Fixtures of the static checks: the compose stack's files as the tools read them, no Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.static import stack_files


@pytest.fixture(scope="session")
def sample_log_lines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Log lines to check the collectors' pipelines against, written by the services' real logging code
    (tests/static/sample_logs.py, in a process of its own); never files a previous run left behind.

    Returns {"source": where they came from, "by_service": {service: [parsed line, ...]}}; lines of files
    named <service>.log are filed under that service.
    """
    log_dir = tmp_path_factory.mktemp("sample-logs")
    result = subprocess.run(
        [sys.executable, "-m", "tests.static.sample_logs", str(log_dir)],
        cwd=stack_files.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"writing sample log lines failed:\n{result.stderr[-3000:]}"
    by_service: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(log_dir.glob("*.log")):
        for number, raw in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as error:
                pytest.fail(f"{path.name}:{number} is not one JSON object per line ({error}): {raw[:200]}")
            assert isinstance(line, dict), f"{path.name}:{number} is JSON but not an object"
            by_service.setdefault(path.stem, []).append(line)
    assert set(by_service) == {"gateway", "users", "worker"}, f"sample log files: {sorted(by_service)}"
    return {"source": "lines written by tests/static/sample_logs.py", "by_service": by_service}


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
