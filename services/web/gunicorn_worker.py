"""A gunicorn worker that keeps serving for a while after its master died, so a killed master costs no
downtime.

A gunicorn master killed outright (SIGKILL, OOM) leaves its workers behind; gunicorn's own workers notice
within a second that their parent changed and stop. supervisord starts a new master at once, but it
needs seconds to import the app and fork its workers (5-9 s on a busy 2-core machine), and until then
nobody answers on the port: the users service was unavailable ~9 s in `make chaos`.

With `reuse_port` (gunicorn_conf.py) the new master binds the port while the orphans still hold it, and
the kernel spreads new connections over both. So an orphan keeps serving — it is a complete worker, only
without a master — for TRACEHOP_ORPHAN_GRACE_S (default 15 s), then stops the usual graceful way.
"""

from __future__ import annotations

import os
import time

from gunicorn.workers.gthread import ThreadWorker

from services.web import settings


class OrphanTolerantThreadWorker(ThreadWorker):
    _orphaned_at: float | None = None

    def is_parent_alive(self) -> bool:
        if self.ppid == os.getppid():
            return True
        if self._orphaned_at is None:
            self._orphaned_at = time.monotonic()
            self.log.warning("master gone: serving on until its successor is up, then stopping: %s", self)
        return time.monotonic() - self._orphaned_at < settings.env_float("TRACEHOP_ORPHAN_GRACE_S", 15.0)
