"""The users service's gunicorn worker: gthread, listening only while it accepts (so no connection waits
on a worker still loading the app), and serving on after its master died until a new master's worker
serves (so a killed master costs no answer).

How it listens: services/web/worker_listeners.py. When an orphan stops: services/web/orphan_watch.py.
The hooks used are ThreadWorker's own methods: `run` (the worker's main loop, which gunicorn documents as
the method to override), `is_parent_alive` (asked once per loop turn) and `set_accept_enabled` (called
with False when the loop ends, and when the worker is at its connection limit).
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker

from services.web.orphan_watch import OrphanWatch
from services.web.worker_listeners import ListensWhenReady, accept_queued


class OrphanTolerantThreadWorker(ListensWhenReady, ThreadWorker):
    def run(self) -> None:
        self.orphan_watch = OrphanWatch(self)
        self.sockets = self.listen_now()
        super().run()

    def is_parent_alive(self) -> bool:
        if self.orphan_watch.keep_serving():
            return True
        self.alive = False  # stop as after SIGTERM: keep-alive connections close after their request
        return False

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled or self.alive:
            super().set_accept_enabled(enabled)  # at the connection limit: the listener stays open
            return
        # Stopping: take what the kernel already queued for us, then leave the port's group.
        for listener in self.sockets:
            accept_queued(listener, self.accept)
        super().set_accept_enabled(False)
        for listener in self.sockets:
            listener.close()
