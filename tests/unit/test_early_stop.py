"""services/web/early_stop.py's question to supervisord when there is no supervisord to ask: a start goes
on (docker compose sets none of supervisord's variables; a supervisord that is gone does not answer)."""

from __future__ import annotations

import time
from pathlib import Path

from services.web.early_stop import supervisord_asked_to_stop


def test_not_under_supervisord_is_not_asked_to_stop():
    assert supervisord_asked_to_stop({}) is False
    # Only our own unix-socket supervisord is asked; an http one (not ours) is not.
    assert (
        supervisord_asked_to_stop(
            {"SUPERVISOR_SERVER_URL": "http://127.0.0.1:9001", "SUPERVISOR_PROCESS_NAME": "users"}
        )
        is False
    )


def test_a_supervisord_that_does_not_answer_lets_the_start_go_on(tmp_path: Path):
    env = {"SUPERVISOR_SERVER_URL": f"unix://{tmp_path / 'gone.sock'}", "SUPERVISOR_PROCESS_NAME": "users"}
    started = time.monotonic()
    assert supervisord_asked_to_stop(env) is False
    assert time.monotonic() - started < 2.5
