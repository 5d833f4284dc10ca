"""celery beat's scheduler: Celery's own (PersistentScheduler, the schedule in a dbm file), plus the
readiness marker (beat_ready.py) written after its first tick.

Why the first tick: `celery beat` builds the scheduler (opens the schedule file, merges `beat_schedule`
into it, syncs it) and sends `beat_init` before its loop; the first `tick()` then puts every entry on its
heap and publishes those already due (a run missed while beat was down). After that first tick returns,
this process has done everything a replacement must do before it keeps the schedule. Configured as
`beat_scheduler` (celery_app.py), so every way of starting beat writes it.
"""

from __future__ import annotations

import os
from typing import Any

from celery.beat import PersistentScheduler
from loguru import logger

from services.worker import beat_ready


class ReadyMarkingScheduler(PersistentScheduler):
    _marked = False

    def tick(self, *args: Any, **kwargs: Any) -> float:
        delay = super().tick(*args, **kwargs)
        if not self._marked:
            self._marked = True
            self._mark_ready()
        return delay

    def _mark_ready(self) -> None:
        ready = beat_ready.this_process()
        try:
            beat_ready.write(beat_ready.marker_path(self.schedule_filename), ready)
        except OSError:
            # beat keeps the schedule all the same; its probe says "not ready", and this says why.
            logger.exception("beat could not write its ready marker")
            return
        logger.info("beat ready", pid=ready.pid, cpu_s=ready.cpu_s)

    def close(self) -> None:
        super().close()
        # A clean stop takes its marker along (a killed beat cannot: its pid tells it apart instead).
        path = beat_ready.marker_path(self.schedule_filename)
        marker = beat_ready.read(path)
        if marker is not None and marker.pid == os.getpid():
            path.unlink(missing_ok=True)
