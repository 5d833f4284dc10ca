"""Publishing by name, and from a second Celery app: two ways a job is queued without its task object.

- `archive_note` is a job only the worker imports (it is in the app's `include`, which only the worker
  loads): the gateway cannot call `archive_note.apply_async`, it sends the job by name
  (`app.send_task("archive_note")`, services/gateway/workflow_routes.py), as a service that does not
  share the worker's code would.
- `archive_note` then queues a reminder through a SECOND Celery app: a library or another team's
  module with an app of its own (its own broker connection and configuration), publishing by name too.

Both stay in the request's trace: the Celery instrumentation listens to Celery's publish signals, which
every app in the process sends, and writes the context into every message's headers whichever app
publishes it (tests/integration/test_celery_shapes.py asserts the tree; docs/context-propagation.md says
what differs).
"""

from __future__ import annotations

from celery import Celery
from loguru import logger

from services.worker.celery_app import app

ARCHIVE_TASK = "archive_note"
REMINDER_TASK = "send_reminder"

# Not the current app (set_as_current=False), as a library's app would be; same broker and queue, so our
# worker runs what it publishes.
notifications = Celery("notifications", set_as_current=False)
# The worker app's broker and queue, read from it when first needed (one reading of the environment).
notifications.add_defaults(
    lambda: {
        "broker_url": app.conf.broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": app.conf.task_default_queue,
        "broker_connection_retry_on_startup": True,
    }
)


@app.task(name=ARCHIVE_TASK)
def archive_note(note: str) -> dict[str, str]:
    reminder = notifications.send_task(REMINDER_TASK, args=[f"archived: {note}"])
    logger.info("note archived, reminder queued by the notifications app", reminder_job_id=reminder.id)
    return {"followup_job_id": reminder.id}
