"""parent_death.py in a real billiard pool child: a repeated parent-death signal never cuts the flush short.

The kernel sends a pool child its parent-death signal again each time another thread of the dying main
process exits. Whether a repeat lands inside the flush depends on timing in the stack's test
(tests/integration/test_worker_kill_spans.py); here it is certain: the flush announces itself on a pipe
and then takes half a second, and the test sends the signal again while it runs. The pool's parent is
this test process (billiard's own Pool, its own terminate handler, real signals); the child's way out
is billiard's `on_process_exit`, where Celery sends `worker_process_shutdown`.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Iterator

import pytest
from billiard.pool import Pool

from services.telemetry import parent_death

FLUSH_S = 0.5
_pipe: list[int] = []  # the write end, in the child


def _flush() -> None:
    os.write(_pipe[0], b"flushing\n")
    time.sleep(FLUSH_S)  # the POST waiting for the trace backend's answer
    os.write(_pipe[0], b"flushed\n")


def _child_init(write_fd: int) -> None:  # Celery's worker_process_init, in the child
    _pipe.append(write_fd)
    parent_death.flush_spans_when_parent_dies(_flush)


def _child_exit(pid: int, exitcode: int) -> None:  # Celery's worker_process_shutdown, in the child
    parent_death.leaving()
    _flush()


def _read_line(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return line


@pytest.fixture
def child() -> Iterator[tuple[int, int]]:
    """(the pool child's pid, the read end of its pipe)."""
    read_fd, write_fd = os.pipe()
    pool = Pool(1, initializer=_child_init, initargs=(write_fd,), on_process_exit=_child_exit)
    try:
        yield pool.apply(os.getpid), read_fd
    finally:
        pool.terminate()
        pool.join()
        os.close(read_fd)
        os.close(write_fd)


def test_a_repeated_parent_death_signal_during_the_flush_is_ignored(child: tuple[int, int]):
    pid, pipe = child
    os.kill(pid, parent_death.PARENT_DEATH_SIGNAL)  # the main process died: the child leaves
    assert _read_line(pipe, 10) == b"flushing\n"
    for _ in range(3):  # the dying main process's other threads
        os.kill(pid, parent_death.PARENT_DEATH_SIGNAL)
        time.sleep(0.01)
    assert _read_line(pipe, 10) == b"flushed\n", "the child was killed in its flush"


def test_the_first_parent_death_signal_takes_an_idle_child_out(child: tuple[int, int]):
    pid, pipe = child
    os.kill(pid, signal.SIGCONT)  # any other signal: nothing happens
    assert _read_line(pipe, 0.5) == b""
    os.kill(pid, parent_death.PARENT_DEATH_SIGNAL)
    assert _read_line(pipe, 10) == b"flushing\n"
    assert _read_line(pipe, 10) == b"flushed\n"
