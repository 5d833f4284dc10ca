"""The full stack under Docker Compose: used by `up`/`down`/`status` when a Docker engine answers.

TRACEHOP_STACK=local forces the embedded stack even where Docker runs; TRACEHOP_STACK=compose insists on
Docker (and fails clearly without it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from tracehop.stack_config import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKER_INFO_TIMEOUT = 5.0


class ComposeError(RuntimeError):
    pass


@dataclass(frozen=True)
class PublishedPort:
    service: str
    url: str


def docker_engine_reachable(timeout: float = DOCKER_INFO_TIMEOUT) -> bool:
    """`docker info` succeeds within `timeout` (a docker CLI alone, without an engine, is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, timeout=timeout)
    except (subprocess.TimeoutExpired, OSError):
        return False
    return result.returncode == 0


def wants_compose(environ: Mapping[str, str] | None = None) -> bool:
    """Whether `up`/`down`/`status` should use Docker Compose rather than the embedded stack."""
    environ = os.environ if environ is None else environ
    choice = environ.get("TRACEHOP_STACK", "auto").strip().lower() or "auto"
    if choice == "local":
        return False
    if choice not in ("auto", "compose"):
        raise ComposeError(f"TRACEHOP_STACK must be auto, local or compose, got {choice!r}")
    usable = COMPOSE_FILE.exists() and docker_engine_reachable()
    if choice == "compose" and not usable:
        raise ComposeError(
            "TRACEHOP_STACK=compose but "
            + ("no docker-compose.yml exists" if not COMPOSE_FILE.exists() else "no Docker engine answers")
        )
    return usable


def _compose(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), *args],
        cwd=REPO_ROOT,
        capture_output=capture,
        text=True,
    )


def compose_up() -> None:
    if _compose("up", "-d", "--wait").returncode != 0:
        raise ComposeError("`docker compose up -d --wait` failed (see its output above)")


def compose_down() -> None:
    if _compose("down").returncode != 0:
        raise ComposeError("`docker compose down` failed (see its output above)")


def compose_ps() -> str:
    result = _compose("ps", "--format", "json", capture=True)
    if result.returncode != 0:
        raise ComposeError(f"`docker compose ps` failed: {result.stderr.strip()}")
    return result.stdout


def published_ports(ps_json: str) -> list[PublishedPort]:
    """Service URLs from `docker compose ps --format json` (a JSON array on older Compose releases,
    one JSON object per line on newer ones)."""
    text = ps_json.strip()
    if not text:
        return []
    if text.startswith("["):
        containers = json.loads(text)
    else:
        containers = [json.loads(line) for line in text.splitlines() if line.strip()]
    found = []
    for container in containers:
        for publisher in container.get("Publishers") or []:
            if publisher.get("PublishedPort") and publisher.get("Protocol", "tcp") == "tcp":
                host = publisher.get("URL") or "127.0.0.1"
                host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
                found.append(
                    PublishedPort(
                        container.get("Service", "?"), f"http://{host}:{publisher['PublishedPort']}"
                    )
                )
    return sorted(set(found), key=lambda port: (port.service, port.url))
