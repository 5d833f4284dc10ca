"""A gunicorn master SIGKILLed (users, then gateway): the service keeps answering and the new master binds
its port at once, on a private stack. How fast, under load, is `make chaos`'s to measure."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.integration.fault_tools import Programs
from tests.integration.stack import RunningStack, private_stack
from tracehop.stack.runner import NOT_SERVING

ENV = {"GUNICORN_WORKERS": "1", "OTEL_BSP_SCHEDULE_DELAY": "200", "TRACEHOP_MAIL_LATENCY_MS": "1"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("master-recovery"), ENV) as running:
        yield running


@pytest.mark.parametrize("program", ["users", "gateway"])
def test_a_killed_master_is_replaced_without_a_port_fight(stack: RunningStack, program: str):
    programs = Programs(stack.stack)
    old_master = programs.pid(program)
    os.kill(old_master, signal.SIGKILL)
    failures, answered_after_kill = [], 0
    deadline = time.monotonic() + 60
    new_master = 0
    while time.monotonic() < deadline:
        try:
            response = stack.http.post(
                f"{stack.gateway}/api/users",
                json={"name": "Ada", "email": "ada@example.org"},
                headers={"Idempotency-Key": str(uuid.uuid4())},
                timeout=5,
            )
            ok = response.status_code == 201
        except requests.RequestException:
            ok = False
        answered_after_kill += ok
        if not ok:
            failures.append(time.monotonic())
        # `status` never calls a process RUNNING whose probe fails.
        for status in stack.stack.status():
            assert status.state != "RUNNING" or status.ready, status
            assert status.state != NOT_SERVING or not status.ready, status
        new_master = next(s.pid for s in stack.stack.status() if s.component == program)
        if new_master not in (0, old_master) and ok and not stack.stack.status()[0].problem:
            break
        time.sleep(0.1)
    assert new_master not in (0, old_master), f"{program} was not restarted"
    assert answered_after_kill, f"{program} never answered again"
    # The new master bound its port at the first try (SO_REUSEPORT), and users' old workers said why
    # they went on serving.
    output = stack.stack.layout.program_output(program).read_text()
    assert "Connection in use" not in output
    if (
        program == "users"
    ):  # gthread workers serve on; the gateway's gevent door worker stops (gunicorn's rule)
        assert "master gone: serving on" in (stack.log_dir / f"{program}.log").read_text()
