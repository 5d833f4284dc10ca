"""The worker's jobs: domain work only (telemetry and metrics come from celery_app's signals).

Each job is idempotent, declares its retry policy on the decorator, and never hides an exception.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from loguru import logger

from services.common.users_client import UsersClient, UsersRejected, UsersUnavailable
from services.worker.celery_app import app
from services.worker.mail import TransientDeliveryError, deliver_welcome_email

_users_client: UsersClient | None = None


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
    max_retries=5,
)
def send_welcome_email(self, user_id: int, recipient_domain: str) -> dict[str, Any]:  # noqa: ANN001
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
def generate_report(self, user_id: int) -> dict[str, Any]:  # noqa: ANN001
    logger.info("generating report", user_id=user_id, attempt=self.request.retries)
    try:
        user = users_client().get_user(user_id)
    except UsersRejected as exc:
        raise ReportFailed(f"users answered {exc.status} {exc.error}: {exc.message}") from exc
    report = {
        "user_id": user["id"],
        "name": user["name"],
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    logger.info("report ready", user_id=user_id)
    return report
