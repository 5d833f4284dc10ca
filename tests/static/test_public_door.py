"""The compose stack's public port has the same protection against slow clients as the local stack's.

No Docker engine here: the compose file is resolved by docker-compose, and the gateway's gunicorn
configuration is loaded the way gunicorn loads it, with exactly the environment compose gives the gateway
container. What it must come to: the public door's worker with sane limits (services/web/door_limits.py).
The behaviour itself is tested against a real gateway in tests/integration/test_door_limits.py and
test_slow_clients.py; `make test-stack` runs the same slow-client phase wherever Docker runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from typing import Any

import pytest

from tests.static.stack_files import REPO_ROOT
from tracehop.stack.supervisord_conf import build_programs

PUBLIC_DOOR_WORKER = "services.web.public_door.PublicDoorWorker"

# Loads the configuration file as gunicorn does (gunicorn.app.base.Application.load_config_from_file) and
# prints the settings that matter, plus the limits the worker will read from the same environment.
_PROBE = """
import json, sys
from gunicorn.app.base import Application
from services.web.door_limits import DoorLimits

class Probe(Application):
    def __init__(self, config_file):
        self.config_file = config_file
        super().__init__()

    def load_config(self):
        self.load_config_from_file(self.config_file)

    def load(self):
        raise AssertionError("never loads the application")

cfg = Probe(sys.argv[1]).cfg
limits = DoorLimits.from_env()
print(json.dumps({
    "worker_class": cfg.worker_class_str,
    "keepalive": cfg.keepalive,
    "limits": [limits.header_timeout_s, limits.body_timeout_s, limits.max_connections],
}))
"""


def gateway_settings(config_file: str, environment: dict[str, str]) -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in environment.items() if v is not None}}
    with tempfile.TemporaryDirectory() as multiproc_dir:
        # The container's multiprocess directory is a tmpfs there; any empty directory will do here.
        env["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
        result = subprocess.run(
            [sys.executable, "-c", _PROBE, config_file],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_protected(settings: dict[str, Any]) -> None:
    assert settings["worker_class"] == PUBLIC_DOOR_WORKER, settings
    header_timeout, body_timeout, max_connections = settings["limits"]
    # Bounded waits (a slow client is let go within a minute) and room for hundreds of waiting clients.
    assert 0 < header_timeout <= 60 and 0 < body_timeout <= 60, settings
    assert 512 <= max_connections <= 10_000, settings


def test_the_compose_gateway_runs_the_public_door(compose_services: dict[str, dict[str, Any]]) -> None:
    gateway = compose_services["gateway"]
    command = gateway["command"]
    config_file = command[command.index("-c") + 1]
    assert config_file == "services/web/gunicorn_public_conf.py"
    assert_protected(gateway_settings(config_file, gateway.get("environment") or {}))


def test_the_compose_gateway_health_check_is_bounded(compose_services: dict[str, dict[str, Any]]) -> None:
    # Under slow clients the door keeps answering /healthz; the check itself must not wait forever either.
    check = " ".join(compose_services["gateway"]["healthcheck"]["test"])
    assert "/healthz" in check and "timeout=" in check


def test_the_local_stack_gateway_runs_the_public_door(tmp_path) -> None:
    from tracehop.stack.config import StackLayout, StackPorts

    layout = StackLayout(tmp_path / "var", tmp_path / "logs")
    programs = {p.name: p for p in build_programs(layout, StackPorts(), {}, None, None, beat=False)}
    gateway = list(programs["gateway"].command)
    config_file = gateway[gateway.index("-c") + 1]
    assert_protected(gateway_settings(config_file, dict(programs["gateway"].environment)))
    # users is private (only the gateway calls it) and stays on gthread.
    users = list(programs["users"].command)
    assert users[users.index("-c") + 1] == "services/web/gunicorn_conf.py"


@pytest.mark.parametrize(
    "environment",
    [
        {"TRACEHOP_GATEWAY_WORKER_CLASS": "gthread"},  # the comparison switch brings the old worker back
        {"TRACEHOP_HEADER_TIMEOUT_S": "3600"},
        {"TRACEHOP_MAX_CONNECTIONS": "8"},
    ],
)
def test_the_check_fails_for_an_unprotected_gateway(environment: dict[str, str]) -> None:
    settings = gateway_settings("services/web/gunicorn_public_conf.py", environment)
    with pytest.raises(AssertionError):
        assert_protected(settings)
