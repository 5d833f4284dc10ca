"""celery beat SIGKILLed in a real stack (issue 14): ready again only once the NEW process has loaded its
schedule, never while beat is dead, and the tick that fell due meanwhile is sent late, not skipped.

beat answers no request; its readiness is the marker its process writes after the scheduler's first tick
(services/worker/beat_ready.py). The schedule file, and the old process's marker, outlive a killed beat:
a probe that trusted either would call a dead beat ready, which is what this test watches for.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from services.worker import beat_ready
from tests.integration.fault_tools import Programs
from tests.integration.stack import RunningStack, private_stack
from tests.waiting import eventually
from tracehop.stack.processes import process_exists
from tracehop.stack.readiness import BeatProbe
from tracehop.stack.runner import NOT_SERVING, ComponentStatus

INTERVAL_S = 10.0
# Longer than a restart even on a loaded machine (1-2 s quiet, up to 8 s seen at load 12), so a kill can
# fall well before a run is due, or just before it.
ENV = {
    "GUNICORN_WORKERS": "1",
    "OTEL_BSP_SCHEDULE_DELAY": "200",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_BEAT_INTERVAL_S": f"{INTERVAL_S:g}",
}
SENDING = "Scheduler: Sending due task heartbeat (heartbeat)"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("beat-recovery"), ENV, beat=True) as running:
        yield running


@dataclass(frozen=True)
class Seen:
    """One look at beat after the kill."""

    old_alive: bool
    supervised_pid: int  # the pid supervisord names now (0: none)
    marker_pid: int  # the pid in the ready marker after the probe and status were asked (0: none)
    probe: str | None
    status: ComponentStatus


def beat_status(stack: RunningStack) -> ComponentStatus:
    (status,) = [status for status in stack.stack.status() if status.component == "beat"]
    return status


def sent_at(stack: RunningStack) -> list[float]:
    """When beat sent each heartbeat (its log's timestamps, as epoch seconds)."""
    return [
        datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).timestamp()
        for line in stack.log_lines("beat")
        if line["message"] == SENDING
    ]


def wait_for_a_send(stack: RunningStack) -> float:
    """Until beat sends a heartbeat; when it did."""
    count = len(sent_at(stack))
    return eventually(lambda: sent_at(stack)[count:], 3 * INTERVAL_S + 30, "beat sending its heartbeat")[0]


# When to kill beat: right after it sent a run (the next falls due after a normal restart: it must not
# be sent again early), or just before the next run falls due (it falls due while no beat runs).
KILL_MOMENTS = {"right after a send": 0.2, "just before the next is due": INTERVAL_S - 0.3}


@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_a_killed_beat_is_ready_only_once_its_replacement_has_loaded_the_schedule(
    stack: RunningStack, moment: str
):
    programs = Programs(stack.stack)
    probe = next(p for p in stack.stack.probes() if isinstance(p, BeatProbe))
    marker = stack.stack.layout.beat_ready_marker
    eventually(lambda: beat_status(stack).ready, 60, "beat ready")
    last_sent = wait_for_a_send(stack)
    old_pid = programs.pid("beat")
    assert probe.check() is None and beat_status(stack).ready
    assert beat_ready.read(marker).pid == old_pid  # type: ignore[union-attr]

    time.sleep(max(0.0, last_sent + KILL_MOMENTS[moment] - time.time()))
    killed_at = time.time()
    os.kill(old_pid, signal.SIGKILL)
    seen: list[Seen] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        old_alive = process_exists(old_pid)
        supervised = next(i.pid for i in programs.client.processes() if i.name == "beat")
        problem, status = probe.check(), beat_status(stack)
        # Read last: a marker that is still the old one (or none) now was so during both asks above.
        written = beat_ready.read(marker)
        seen.append(Seen(old_alive, supervised, written.pid if written else 0, problem, status))
        if seen[-1].status.ready and seen[-1].marker_pid not in (0, old_pid):
            break
        time.sleep(0.02)

    new_pid = seen[-1].supervised_pid
    assert seen[-1].status.ready, f"beat not ready again within 60 s: {seen[-1]}"
    assert new_pid != old_pid and seen[-1].marker_pid == new_pid and seen[-1].status.pid == new_pid
    # While beat was dead — the killed process gone, no new one done loading — nothing called it ready.
    dead = [s for s in seen if not s.old_alive and s.marker_pid in (0, old_pid)]
    assert dead, "never saw beat between the kill and its replacement's marker"
    called_ready = [s for s in dead if s.probe is None or s.status.ready or s.status.state == "RUNNING"]
    assert not called_ready, called_ready[:3]
    # The new process RUNNING (supervisord: up for `startsecs`) before its marker: not ready, and says so.
    for s in seen:
        if s.status.state == NOT_SERVING:
            assert s.status.problem and "has not loaded its schedule yet" in s.status.problem, s

    # The run due next: late but not skipped if it fell due while no beat ran (Celery sends an interval
    # entry whose time has passed at once, from the first tick, then a full interval later); on time and
    # not sent twice otherwise (each run's time reaches the schedule file as it is sent, beat_sync_every=1:
    # with Celery's default of every 3 minutes, the new beat would send at once a run already sent).
    ready = beat_ready.read(marker)
    assert ready is not None and ready.pid == new_pid
    first_after = eventually(
        lambda: min((t for t in sent_at(stack) if t > killed_at), default=None),
        INTERVAL_S + 30,
        "a heartbeat sent after the kill",
    )
    due = last_sent + INTERVAL_S
    fell_due_meanwhile = due < ready.ready_at
    print(
        f"beat killed {moment} ({killed_at - last_sent:.2f} s after a send): the new one ready "
        f"{ready.ready_at - killed_at:.2f} s after the kill ({ready.cpu_s:.2f} s of CPU); next send "
        f"{first_after - due:+.2f} s from due; fell due during the restart: {fell_due_meanwhile}"
    )
    if fell_due_meanwhile:
        assert first_after <= ready.ready_at  # sent by the new beat's first tick, before its marker
    else:
        assert first_after >= due - 0.05  # not before its time: not a resend of the run sent before
        assert first_after <= due + 1.0  # and on time


def test_a_stopped_beat_is_not_serving(stack: RunningStack):
    """Alive but wedged (SIGSTOP): RUNNING to supervisord, NOT SERVING to `make status`."""
    programs = Programs(stack.stack)
    eventually(lambda: beat_status(stack).ready, 60, "beat ready")
    pid = programs.pid("beat")
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = eventually(
            lambda: (status := beat_status(stack)).state == NOT_SERVING and status, 10, "beat NOT SERVING"
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    assert stopped.problem == f"beat pid {pid} is stopped (SIGSTOP)"
    resumed = eventually(lambda: (status := beat_status(stack)).ready and status, 30, "beat ready again")
    assert resumed.pid == pid


def test_a_beat_stopped_cleanly_takes_its_marker_along(stack: RunningStack):
    """supervisord's stop (SIGTERM): beat syncs its schedule and removes its marker on the way out, and a
    beat started again is ready once it has written its own."""
    programs = Programs(stack.stack)
    marker = stack.stack.layout.beat_ready_marker
    eventually(lambda: beat_status(stack).ready, 60, "beat ready")
    old_pid = programs.pid("beat")
    programs.stop("beat")
    assert not marker.exists()
    status = beat_status(stack)
    assert (status.state, status.ready, status.problem) == ("STOPPED", False, "no beat process runs")
    programs.start("beat")
    ready = eventually(lambda: (status := beat_status(stack)).ready and status, 60, "beat ready again")
    assert ready.pid != old_pid and beat_ready.read(marker).pid == ready.pid  # type: ignore[union-attr]
