"""Keeping job results out of the worker's log.

Celery logs every finished job with its return value (`Task generate_report[…] succeeded in 0.01s:
{'user_id': 4, 'name': 'Ada Lovelace', …}`), and a report holds the user's name. The result is stored for
whoever asks GET /api/jobs/<id>; the log line, copied to Loki and onto spans as an event, needs only the
job, its id and how long it took.
"""

from __future__ import annotations

import logging

CELERY_TRACE_LOGGER = "celery.app.trace"
HIDDEN = "<result not logged>"


class HideJobResults(logging.Filter):
    """Replaces `return_value` in Celery's "succeeded" records (their args are a mapping)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, dict) and "return_value" in record.args:
            record.args = {**record.args, "return_value": HIDDEN}
            if isinstance(getattr(record, "data", None), dict):
                record.data = record.args  # Celery passes the same mapping as `extra={"data": ...}`
        return True


def hide_job_results() -> None:
    """Install the filter on Celery's logger (once; it survives the fork into pool processes)."""
    celery_logger = logging.getLogger(CELERY_TRACE_LOGGER)
    if not any(isinstance(existing, HideJobResults) for existing in celery_logger.filters):
        celery_logger.addFilter(HideJobResults())
