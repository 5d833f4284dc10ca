"""Which processes still exist: used by `down` to prove that nothing it started is left behind.

Zombies count as gone: in a container whose init does not reap, an exited daemon stays a zombie
although it holds nothing any more.
"""

from __future__ import annotations

import contextlib
import os
import signal

from services.metrics import proc_stat
from services.web.listening_sockets import listens_on


def process_exists(pid: int) -> bool:
    if pid <= 0:
        return False
    if proc_stat.PROC.is_dir():
        stat = proc_stat.read_stat(pid)
        return stat is not None and not stat.zombie
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_command_line(pid: int) -> str:
    """The command line of `pid` ("" when unknown or gone)."""
    return proc_stat.command_line(pid)


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    if pgid <= 0:
        return []
    if not proc_stat.PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for pid in proc_stat.pids():
        stat = proc_stat.read_stat(pid)
        if stat is not None and not stat.zombie and stat.pgid == pgid:
            members.append(pid)
    return sorted(members)


def kill_group(pgid: int) -> None:
    """SIGKILL a process group supervisord started and failed to stop (last resort of `down`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """Live (non-zombie) child processes of `pid`."""
    found = []
    for candidate in proc_stat.pids():
        stat = proc_stat.read_stat(candidate)
        if stat is not None and not stat.zombie and stat.ppid == pid:
            found.append(candidate)
    return sorted(found)


def a_child_listens(pid: int, port: int) -> bool:
    """Whether a child of `pid` (a gunicorn master's worker) holds a listening socket on `port`. True
    where /proc cannot tell."""
    if not proc_stat.PROC.is_dir():
        return True
    return any(listens_on(child, port) for child in children(pid))
