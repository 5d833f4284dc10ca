"""Simulated e-mail delivery for the welcome job.

Real mail servers sometimes defer a first delivery (greylisting: "451 try again later") and accept the
retry. We simulate exactly that for the domains in TRACEHOP_GREYLIST_DOMAINS, which gives the demo and
the tests a job that fails once, is retried with backoff, and then succeeds — within one trace.

The domains in TRACEHOP_MAIL_DOWN_DOMAINS have a mail server that never accepts: every attempt is
deferred, so the job uses up its retries and fails for good — the "poison job" of the reliability tests.
"""

from __future__ import annotations

import time

from loguru import logger

from services.telemetry.traced import traced
from services.web import settings


class TransientDeliveryError(Exception):
    """The receiving server asked us to try again later."""


def greylisted_domains() -> set[str]:
    return _domains("TRACEHOP_GREYLIST_DOMAINS", "greylisted.example")


def down_domains() -> set[str]:
    return _domains("TRACEHOP_MAIL_DOWN_DOMAINS", "maildown.example")


def _domains(variable: str, default: str) -> set[str]:
    return {d.strip().lower() for d in settings.env_str(variable, default).split(",") if d.strip()}


@traced
def deliver_welcome_email(user_id: int, recipient_domain: str, attempt: int) -> None:
    """Pretend to hand a welcome e-mail to the recipient's mail server.

    Traced: the span `deliver_welcome_email` carries the user, the domain and the attempt number, holds
    the log lines below as events, and is marked as an error when the delivery is deferred.
    """
    logger.info(
        "delivering welcome e-mail", user_id=user_id, recipient_domain=recipient_domain, attempt=attempt
    )
    time.sleep(settings.env_float("TRACEHOP_MAIL_LATENCY_MS", 5.0) / 1000)
    if recipient_domain.lower() in down_domains():
        logger.warning(
            "delivery deferred: mail server down", user_id=user_id, recipient_domain=recipient_domain
        )
        raise TransientDeliveryError(f"421 4.3.2 {recipient_domain} not available, try again later")
    if attempt == 0 and recipient_domain.lower() in greylisted_domains():
        logger.warning("delivery deferred: greylisted", user_id=user_id, recipient_domain=recipient_domain)
        raise TransientDeliveryError(f"451 4.7.1 greylisted by {recipient_domain}, try again later")
    logger.info("welcome e-mail delivered", user_id=user_id, recipient_domain=recipient_domain)
