"""Jobs in every shape a Celery workflow takes, and the canvases that combine them.

- a chain, extract -> transform -> load: each step is queued by the worker when the previous one succeeds;
- a chord, count_words x N -> sum_counts: a group whose results feed one callback;
- a job with a countdown (send_reminder, queued with an ETA);
- a periodic job run by celery beat (heartbeat: the schedule is in celery_app);
- a job that queues another job (plan_followup -> send_reminder).

Domain work only, like tasks.py: telemetry and metrics come from celery_app's signals, so the trace each
shape produces is whatever the Celery instrumentation makes of it (docs/context-propagation.md shows and
explains every tree; tests/integration/test_celery_shapes.py asserts them). Every job is idempotent.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from celery import chain, chord
from celery.canvas import Signature
from loguru import logger

from services.worker.celery_app import app
from services.worker.worker_redis import worker_redis

MAX_CHORD_PARTS = 8


# -- chain: extract -> transform -> load --------------------------------------------------------------


@app.task(name="etl_extract")
def etl_extract(source: str) -> dict[str, Any]:
    records = [f"{source}-{number}" for number in range(1, 4)]
    logger.info("extracted", source=source, records=len(records))
    return {"source": source, "records": records}


@app.task(name="etl_transform")
def etl_transform(batch: dict[str, Any]) -> dict[str, Any]:
    records = [record.upper() for record in batch["records"]]
    logger.info("transformed", source=batch["source"], records=len(records))
    return {**batch, "records": records}


@app.task(name="etl_load")
def etl_load(batch: dict[str, Any]) -> dict[str, Any]:
    logger.info("loaded", source=batch["source"], records=len(batch["records"]))
    return {"source": batch["source"], "loaded": len(batch["records"])}


def etl_pipeline(source: str) -> Signature:
    """The chain; its result (what `apply_async()` returns) is the last step's."""
    return chain(etl_extract.s(source), etl_transform.s(), etl_load.s())


# -- chord: a group of count_words, then sum_counts over their results ------------------------------------


@app.task(name="count_words")
def count_words(text: str) -> int:
    return len(text.split())


@app.task(name="sum_counts")
def sum_counts(counts: list[int]) -> dict[str, int]:
    logger.info("counted", parts=len(counts), words=sum(counts))
    return {"parts": len(counts), "words": sum(counts)}


def word_count(text: str, parts: int) -> Signature:
    """The chord over `parts` consecutive slices of the words of `text` (at most one part per word, at
    most MAX_CHORD_PARTS); its result is the callback's."""
    words = text.split() or [""]
    parts = max(1, min(parts, MAX_CHORD_PARTS, len(words)))
    bounds = [index * len(words) // parts for index in range(parts + 1)]
    slices = [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(parts)]
    return chord([count_words.s(piece) for piece in slices], sum_counts.s())


# -- countdown, and a job that queues another ----------------------------------------------------------


# The follow-up of a job is named by the job's own id: a redelivered plan_followup queues the same one.
FOLLOWUP_NAMESPACE = uuid.UUID("5b0f8b7e-6f1e-4d4a-9a53-0c6d2f4f7a11")
SENT_KEY_PREFIX = "tracehop:reminder-sent:"
SENT_KEY_TTL_S = 7 * 24 * 3600


def followup_job_id(job_id: str) -> str:
    return str(uuid.uuid5(FOLLOWUP_NAMESPACE, job_id))


@app.task(name="send_reminder", bind=True)
def send_reminder(self, note: str) -> dict[str, str]:
    """Sends once per job id: a second run of the same id (a message queued twice, or redelivered after
    the reminder went out) answers what the first one sent, without sending again."""
    sent_at = datetime.now(UTC).isoformat(timespec="milliseconds")
    key = SENT_KEY_PREFIX + self.request.id
    if not worker_redis().set(key, sent_at, nx=True, ex=SENT_KEY_TTL_S):
        first = worker_redis().get(key)
        logger.info("reminder already sent", note=note)
        return {"note": note, "sent_at": first.decode() if first else sent_at}
    logger.info("reminder sent", note=note)
    return {"note": note, "sent_at": sent_at}


@app.task(name="plan_followup", bind=True)
def plan_followup(self, note: str) -> dict[str, str]:
    """Decides on a follow-up and queues it: the new job's trace continues this one's.

    Idempotent under redelivery (jobs are acknowledged late): the follow-up's id derives from this job's
    id, so running again queues the same job id, and send_reminder sends once per id.
    """
    followup = send_reminder.apply_async(
        args=[f"follow-up: {note}"], task_id=followup_job_id(self.request.id)
    )
    logger.info("follow-up queued", followup_job_id=followup.id)
    return {"followup_job_id": followup.id}


# -- periodic (celery beat) ------------------------------------------------------------------------------


@app.task(name="heartbeat")
def heartbeat() -> dict[str, str]:
    """Stands for any scheduled maintenance job: nobody's request started it, so its trace is its own."""
    at = datetime.now(UTC).isoformat(timespec="seconds")
    logger.info("heartbeat", at=at)
    return {"at": at}
