"""Should a gunicorn worker whose master died go on serving? Yes, until a new master's worker serves, or
for at most the orphan grace.

A master killed outright (SIGKILL, OOM) leaves its workers behind; gunicorn's own workers stop within a
second of noticing that their parent changed. supervisord starts a new master at once, but its workers
need seconds to import the app and nobody would answer meanwhile. Since every worker listens on a socket
of its own (SO_REUSEPORT, worker_listeners.py), an orphan can simply go on: it is a complete worker, only
without a master.

It stops — gracefully, closing its listener first — as soon as a listening socket appears on its port that
was not there when its master died: our workers listen only once they accept, so that is the new master's
worker serving. Or when TRACEHOP_ORPHAN_GRACE_S (default 60 s) have passed, whoever serves by then: a
new master that never comes up (stopped, failing) must not leave orphans serving for good. 60 s, not the
15 s it was: at a load average of 17 on the 2-core development machine a new master's workers took 19 s
to serve, and an orphan that stops before them leaves a gap.
"""

from __future__ import annotations

import os
import time

from services.web import settings
from services.web.listening_sockets import listening_inodes


class OrphanWatch:
    def __init__(self, worker) -> None:
        self.worker = worker
        self.grace_s = settings.orphan_grace_s()
        self._orphaned_at: float | None = None
        self._listeners_then: set[int] = set()

    def keep_serving(self) -> bool:
        """Called about once a second by the worker's main loop; False means: stop gracefully now."""
        if self.worker.ppid == os.getppid():
            return True
        now = time.monotonic()
        if self._orphaned_at is None:
            self._orphaned_at = now
            # Ours and our orphaned siblings' (the new master has had no time to boot a worker yet).
            self._listeners_then = self._listeners()
            self.worker.log.warning(
                "master gone: serving on until a new master's worker serves (at most %g s): %s",
                self.grace_s,
                self.worker,
            )
            return True
        if self._listeners() - self._listeners_then:
            self.worker.log.info("master gone, a new worker serves: stopping %s", self.worker)
            return False
        if now - self._orphaned_at >= self.grace_s:
            self.worker.log.warning("master gone, orphan grace over: stopping %s", self.worker)
            return False
        return True

    def _listeners(self) -> set[int]:
        inodes: set[int] = set()
        for listener in self.worker.sockets:
            try:
                port = listener.getsockname()[1]
            except (OSError, AttributeError, IndexError, TypeError):
                continue  # a closed socket, or a unix socket: no port to watch
            inodes |= listening_inodes(port)
        return inodes
