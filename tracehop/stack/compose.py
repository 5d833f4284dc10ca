"""The full stack under Docker Compose: used by `up`/`down`/`status` when a Docker engine answers.

TRACEHOP_STACK=local forces the embedded stack even where Docker runs; TRACEHOP_STACK=compose insists on
Docker (and fails clearly without it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from tracehop.stack.config import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
VERSIONS_ENV = REPO_ROOT / ".env"  # committed: image versions and non-secret defaults
LOCAL_ENV = REPO_ROOT / ".env.local"  # gitignored: the Grafana admin password and personal settings
LOG_DIR = REPO_ROOT / "logs"
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


def ensure_local_env() -> str | None:
    """Create .env.local with a random Grafana admin password when it is missing (mode 600).

    Returns the new password so `up` can show it once; None when the file already existed. compose
    refuses to start without a password rather than fall back to Grafana's admin/admin.
    """
    if LOCAL_ENV.exists():
        return None
    password = secrets.token_urlsafe(18)
    fd = os.open(LOCAL_ENV, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("# Created by `make up` (see .env.example). Gitignored.\n")
        handle.write(f"GRAFANA_ADMIN_PASSWORD={password}\n")
    return password


def _compose(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    # compose reads `.env` by itself but nothing else: name both files, the committed one first so the
    # personal one can override it.
    env_files = ["--env-file", str(VERSIONS_ENV)]
    if LOCAL_ENV.exists():
        env_files += ["--env-file", str(LOCAL_ENV)]
    # The services run as the invoking user, so what they write into the ./logs bind mount is yours.
    environment = {"TRACEHOP_UID": str(os.getuid()), "TRACEHOP_GID": str(os.getgid()), **os.environ}
    return subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), *env_files, *args],
        cwd=REPO_ROOT,
        capture_output=capture,
        text=True,
        env=environment,
    )


def compose_up() -> str | None:
    """Build and start the full stack; returns a newly generated Grafana password, if one was made."""
    password = ensure_local_env()
    # Created by us, not by the Docker daemon, which would make it root's and unwritable for the services.
    LOG_DIR.mkdir(exist_ok=True)
    if _compose("up", "-d", "--build", "--wait").returncode != 0:
        raise ComposeError("`docker compose up -d --build --wait` failed (see its output above)")
    return password


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
