"""The multiprocess directory of one service (PROMETHEUS_MULTIPROC_DIR).

gunicorn's workers and Celery's pool children each write their metrics (prometheus_client's `.db` files)
and exemplars (`exemplars_<pid>.json`) there, and /metrics sums them.
"""

from __future__ import annotations

import os

from prometheus_client import multiprocess

from services.metrics import exemplars
from services.web import settings


def reset_directory() -> str:
    """Create PROMETHEUS_MULTIPROC_DIR, emptied of a previous run's files (their values would be summed in).

    Called once by the process that serves /metrics, before its children start. Raises when the variable
    is unset: each child would then count in its own memory, and /metrics would show zeros.
    """
    directory = settings.prometheus_multiproc_dir()
    if not directory:
        raise RuntimeError(
            "PROMETHEUS_MULTIPROC_DIR must name a writable directory for the service's metrics "
            "(make up, docker compose and the Dockerfile set it)"
        )
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db") or name.startswith(exemplars.FILE_PREFIX):
            os.remove(os.path.join(directory, name))
    return directory


def mark_process_dead(pid: int) -> None:
    """Forget what a dead child wrote that must not be summed any more (its gauges, its exemplars)."""
    multiprocess.mark_process_dead(pid)
    exemplars.mark_process_dead(pid)
