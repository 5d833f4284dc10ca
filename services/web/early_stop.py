"""Stops that come while a gunicorn process starts, before it can hear them: honoured anyway.

Two windows lose a SIGTERM: supervisord's, before it has exec'd the master; gunicorn's, before a worker
has installed its own handlers.

## The master: a stop supervisord sent before the exec

supervisord starts a program by forking itself; the child sets up its process group, its file
descriptors and its environment, then execs the program's command (supervisor/process.py,
`_spawn_as_child`). A stop (`supervisorctl stop`, `make down`) that comes in that window is lost:
- before the child's `setpgrp`, the group supervisord signals (stopasgroup) does not exist yet: the kill
  fails with ESRCH, which supervisord takes for "it just exited on its own";
- after it, the SIGTERM reaches the child while it still runs supervisord's own code, whose handler
  only notes the signal in the child's copy of supervisord's state; the exec forgets it.
Either way supervisord calls the program STOPPING and waits `stopwaitsecs` (20 s) while the program
boots as if nothing had happened, then SIGKILLs its group. A killed users master's successor, stopped the
moment it was spawned, thus booted workers that relieved the dead master's orphans and was killed 20 s
later (`test_stopping_the_stack_leaves_no_orphan_behind`, one failure under load; reproduced 7 times in 8
by starting and stopping the program in one XML-RPC multicall: tests/integration/test_master_recovery.py).

supervisord marks the program STOPPING before it sends the signal. So a process that asks supervisord
for its own state once it runs its own code, and finds itself STOPPING, was asked to stop; if it finds
anything else, any stop from then on is a signal it receives (the default action of SIGTERM ends a
Python process until the program installs its own handler).

## A worker: a SIGTERM before its own handlers

gunicorn forks a worker with its master's handlers, and installs the worker's own (`init_signals`) only
after our post_fork hook (telemetry set up: tens of ms, more under load). A SIGTERM in between, from
supervisord's group stop or from the master stopping its workers, only queues in the worker's copy of
the master's signal queue: the worker loads the app and serves on (a worker SIGTERMed the moment it
appears survived 5 times in 5), and a stopping master waits its `graceful_timeout` (10 s) before it
SIGKILLs it (gunicorn's `Arbiter.stop`). So post_fork first reads that queue, and from then until
gunicorn's handler SIGTERM ends the worker at once (it has no request yet).
"""

from __future__ import annotations

import http.client
import os
import queue
import signal
import socket
import xmlrpc.client
from collections.abc import Mapping

# supervisord answers from its event loop within milliseconds; a wedged one must not hold up a start.
_TIMEOUT_S = 2.0


def supervisord_asked_to_stop(environ: Mapping[str, str] = os.environ, pid: int | None = None) -> bool:
    """True when supervisord runs this process (its environment says so) and already calls it STOPPING.
    False when not under supervisord, or when supervisord does not answer: a start goes on unless we know."""
    url = environ.get("SUPERVISOR_SERVER_URL", "")
    name = environ.get("SUPERVISOR_PROCESS_NAME")
    if not url.startswith("unix://") or not name:
        return False  # docker compose, a plain `gunicorn …`, or a supervisord we do not configure
    group = environ.get("SUPERVISOR_GROUP_NAME", name)
    try:
        info = _supervisor(url[len("unix://") :]).getProcessInfo(f"{group}:{name}")
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return False
    return info.get("pid") == (pid or os.getpid()) and info.get("statename") == "STOPPING"


# What gunicorn's stops send a worker, and what its master's inherited handler queues: SIGTERM (graceful,
# and supervisord's) and SIGINT (Ctrl-C of a foreground gunicorn). Their default action ends the process.
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def worker_stopped_before_its_handlers(server) -> bool:
    """Call first thing in post_fork. True when a stop signal came since the fork (queued by the master's
    handler, which the worker still has), or was queued in the master before it (the master is stopping);
    from here until gunicorn installs the worker's handlers, one ends the worker by its default action."""
    # Blocked while the handlers change, so that none falls between the queue read and SIG_DFL; blocking
    # also runs the Python handler of one that arrived a moment ago (CPython checks signals on return).
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        for signum in _STOP_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        return bool(_STOP_SIGNALS & set(_drain(server.SIG_QUEUE)))
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # one pending now ends the worker


def _drain(signals: queue.SimpleQueue) -> list[int]:
    """The worker's copy of its master's queue: nobody else reads it in the worker."""
    drained = []
    while True:
        try:
            drained.append(signals.get_nowait())
        except queue.Empty:
            return drained


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=_TIMEOUT_S)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host: object) -> http.client.HTTPConnection:
        return _UnixConnection(self._path)


def _supervisor(socket_path: str):
    return xmlrpc.client.ServerProxy("http://localhost", transport=_UnixTransport(socket_path)).supervisor
