"""The worker's jobs: domain work only (telemetry and metrics come from celery_app's signals).

Each job is idempotent, declares its retry policy on the decorator, and never hides an exception.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from opentelemetry import trace

from services.clients.users_client import UsersClient, UsersRejected, UsersUnavailable
from services.telemetry.traced import traced
from services.worker.celery_app import app
from services.worker.mail import TransientDeliveryError, deliver_welcome_email

_users_client: UsersClient | None = None
tracer = trace.get_tracer(__name__)


def users_client() -> UsersClient:
    """One pooled client per worker process, created after the fork."""
    global _users_client
    if _users_client is None:
        _users_client = UsersClient()
    return _users_client


@app.task(
    name="send_welcome_email",
    bind=True,
    autoretry_for=(TransientDeliveryError,),
    retry_backoff=1,
    retry_backoff_max=60,
    retry_jitter=True,
    # max_retries: the task_annotations of celery_app's configuration (TRACEHOP_MAIL_MAX_RETRIES).
)
def send_welcome_email(self, user_id: int, recipient_domain: str) -> dict[str, Any]:
    deliver_welcome_email(user_id, recipient_domain, attempt=self.request.retries)
    return {"user_id": user_id, "delivered": True, "attempts": self.request.retries + 1}


class ReportFailed(Exception):
    """The report cannot be produced, and retrying would not help (e.g. the user does not exist)."""


@app.task(
    name="generate_report",
    bind=True,
    autoretry_for=(UsersUnavailable,),
    retry_backoff=1,
    retry_backoff_max=30,
    retry_jitter=True,
    max_retries=5,
)
def generate_report(self, user_id: int) -> dict[str, Any]:
    try:
        return build_report(user_id, attempt=self.request.retries)
    except UsersRejected as exc:
        raise ReportFailed(f"users answered {exc.status} {exc.error}: {exc.message}") from exc


@traced
def build_report(user_id: int, attempt: int = 0) -> dict[str, Any]:
    """The report's domain work, traced: its span holds the call to users and the log lines below."""
    logger.info("generating report", user_id=user_id, attempt=attempt)
    user = users_client().get_user(user_id)
    report = {
        "user_id": user["id"],
        "name": user["name"],
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    logger.info("report ready", user_id=user_id)
    return report


@app.task(name="long_job", bind=True)
def long_job(self, steps: int, step_ms: int) -> dict[str, Any]:
    """A job that works in steps, like a batch import: what a worker killed mid-job leaves in a trace.

    Each step is a span that ends (and is exported) before the next one starts, so the trace keeps the
    steps an attempt finished even when its process is killed; the attempt's own CONSUMER span dies with
    the process (an unfinished span is never exported). The job is idempotent: running it again after a
    crash redoes the steps. `job.redelivered` says whether the broker handed the message out again (kombu
    marks a message it restores after a lost worker or an expired visibility timeout).
    """
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    trace.get_current_span().set_attribute("job.redelivered", redelivered)
    for step in range(min(steps, 100)):
        # Which process ran this attempt (the reliability tests kill exactly that one) is the resource's
        # process.pid: tracing is set up in each pool child.
        with tracer.start_as_current_span("long_job.step", attributes={"job.step": step}):
            time.sleep(min(step_ms, 10_000) / 1000)
    return {"steps": steps, "redelivered": redelivered}
