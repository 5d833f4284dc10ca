"""Simulated e-mail delivery for the welcome job.

Real mail servers sometimes defer a first delivery (greylisting: "451 try again later") and accept the
retry. We simulate exactly that for the domains in TRACEHOP_GREYLIST_DOMAINS, which gives the demo and
the tests a job that fails once, is retried with backoff, and then succeeds — within one trace.
"""

from __future__ import annotations

import time

from loguru import logger

from services.common import settings


class TransientDeliveryError(Exception):
    """The receiving server asked us to try again later."""


def greylisted_domains() -> set[str]:
    raw = settings.env_str("TRACEHOP_GREYLIST_DOMAINS", "greylisted.example")
    return {d.strip().lower() for d in raw.split(",") if d.strip()}


def deliver_welcome_email(user_id: int, recipient_domain: str, attempt: int) -> None:
    """Pretend to hand a welcome e-mail to the recipient's mail server."""
    logger.info("delivering welcome e-mail", user_id=user_id, recipient_domain=recipient_domain, attempt=attempt)
    time.sleep(settings.env_float("TRACEHOP_MAIL_LATENCY_MS", 5.0) / 1000)
    if attempt == 0 and recipient_domain.lower() in greylisted_domains():
        logger.warning("delivery deferred: greylisted", user_id=user_id, recipient_domain=recipient_domain)
        raise TransientDeliveryError(f"451 4.7.1 greylisted by {recipient_domain}, try again later")
    logger.info("welcome e-mail delivered", user_id=user_id, recipient_domain=recipient_domain)
