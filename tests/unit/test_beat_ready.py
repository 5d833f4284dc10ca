"""beat's ready marker (services/worker/beat_ready.py): a marker counts only for the live process that
wrote it, and only when that process is the one its supervisor runs now. Real processes, real /proc."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from services.worker import beat_ready


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return beat_ready.marker_path(tmp_path / "celerybeat-schedule")


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def test_the_marker_sits_beside_the_schedule_and_round_trips(marker: Path):
    assert marker.name == "celerybeat-schedule.ready"
    ready = beat_ready.this_process()
    beat_ready.write(marker, ready)
    assert beat_ready.read(marker) == ready
    assert ready.pid == os.getpid() and ready.started_ticks > 0 and ready.cpu_s > 0
    assert [path.name for path in marker.parent.iterdir()] == [marker.name]  # no temporary file left


def test_ready_only_for_the_running_process_that_wrote_it(marker: Path):
    assert beat_ready.problem(marker, os.getpid()) == "no beat has loaded its schedule yet (no ready marker)"
    beat_ready.write(marker, beat_ready.this_process())
    assert beat_ready.problem(marker, os.getpid()) is None
    assert beat_ready.problem(marker, None) is None
    # A new beat runs (supervisord says so) but has not written its own marker yet.
    assert beat_ready.problem(marker, os.getpid() + 1) == (
        f"beat pid {os.getpid() + 1} has not loaded its schedule yet (the marker is pid {os.getpid()}'s)"
    )


def test_a_marker_left_by_a_killed_process_is_not_ready(marker: Path):
    process = sleeper()
    stat = beat_ready.proc_stat.read_stat(process.pid)
    assert stat is not None
    beat_ready.write(marker, beat_ready.BeatReady(process.pid, stat.started_ticks, 0.0, 0.0))
    assert beat_ready.problem(marker, process.pid) is None
    process.kill()
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # dead, not reaped yet: a zombie
    assert (
        beat_ready.problem(marker, process.pid)
        == f"beat pid {process.pid}, which wrote the marker, has exited"
    )
    process.wait()
    assert (
        beat_ready.problem(marker, process.pid)
        == f"beat pid {process.pid}, which wrote the marker, has exited"
    )


def test_a_reused_pid_is_told_apart_by_its_start_time(marker: Path):
    ready = beat_ready.this_process()
    beat_ready.write(marker, dataclasses.replace(ready, started_ticks=ready.started_ticks - 1))
    assert (
        beat_ready.problem(marker, os.getpid())
        == f"the marker is from an earlier process that had pid {os.getpid()}"
    )


def test_a_stopped_beat_is_not_ready(marker: Path):
    process = sleeper()
    try:
        stat = beat_ready.proc_stat.read_stat(process.pid)
        assert stat is not None
        beat_ready.write(marker, beat_ready.BeatReady(process.pid, stat.started_ticks, 0.0, 0.0))
        os.kill(process.pid, signal.SIGSTOP)
        os.waitid(os.P_PID, process.pid, os.WSTOPPED | os.WNOWAIT)
        assert beat_ready.problem(marker, process.pid) == f"beat pid {process.pid} is stopped (SIGSTOP)"
    finally:
        process.kill()
        process.wait()


def test_a_torn_or_foreign_marker_is_no_marker(marker: Path):
    marker.write_text('{"pid": 12')
    assert beat_ready.read(marker) is None
    marker.write_text('{"pid": 12, "something": 1}')
    assert beat_ready.read(marker) is None
