"""Routes that queue Celery workflows, one per shape (docs/context-propagation.md shows each trace).

    POST /api/workflows/etl        {"source": "orders"}            chain extract -> transform -> load
    POST /api/workflows/wordcount  {"text": "...", "parts": 3}     chord: count_words x parts -> sum_counts
    POST /api/workflows/reminder   {"note": "...", "delay_s": 1}   one job with a countdown (an ETA)
    POST /api/workflows/followup   {"note": "..."}                 a job that queues another job
    POST /api/workflows/by-name    {"note": "..."}                 a job sent by name (send_task), which
                                                                   queues one through a second Celery app

Every field is optional. Each answers 202 {"job_id", "trace_id", ...}; `job_id` is the job whose result
ends the workflow (the chain's last step, the chord's callback), so GET /api/jobs/<job_id> tells when
the whole workflow is done. The periodic job (beat) has no route: nobody's request starts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from celery.result import AsyncResult
from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from services.gateway.job_queue import broker_errors_as_unavailable
from services.telemetry.setup import current_trace_id
from services.web.http_errors import ApiError
from services.web.json_body import read_json_body
from services.worker import workflow_tasks
from services.worker.celery_app import app as celery_app

# The name of a job in services/worker/named_tasks.py, which the gateway must not import (see by_name).
ARCHIVE_TASK = "archive_note"

blueprint = Blueprint("workflows", __name__, url_prefix="/api/workflows")

MAX_TEXT_LENGTH = 4000
MAX_NOTE_LENGTH = 200
MAX_DELAY_S = 60.0
DEFAULT_TEXT = "one trace across Flask and Celery with logs and metrics that line up"
_SOURCE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class WorkflowQueue:
    """Publishes the workflows (tests swap in a fake through the app config key WORKFLOW_QUEUE)."""

    def etl(self, source: str) -> AsyncResult:
        return workflow_tasks.etl_pipeline(source).apply_async()

    def word_count(self, text: str, parts: int) -> AsyncResult:
        return workflow_tasks.word_count(text, parts).apply_async()

    def reminder(self, note: str, delay_s: float) -> AsyncResult:
        return workflow_tasks.send_reminder.apply_async(args=[note], countdown=delay_s)

    def followup(self, note: str) -> AsyncResult:
        return workflow_tasks.plan_followup.apply_async(args=[note])

    def by_name(self, note: str) -> AsyncResult:
        # A job the gateway has no code for (services/worker/named_tasks.py, imported by the worker only):
        # sent by its name, as from a service that does not share the worker's code.
        return celery_app.send_task(ARCHIVE_TASK, args=[note])


@blueprint.record_once
def _install_queue(state: BlueprintSetupState) -> None:
    state.app.extensions["workflow_queue"] = state.app.config.get("WORKFLOW_QUEUE") or WorkflowQueue()


def _queue() -> WorkflowQueue:
    return current_app.extensions["workflow_queue"]


@blueprint.post("/etl")
def etl() -> tuple[Response, int]:
    body = _body()
    source = body.get("source", "orders")
    if not isinstance(source, str) or not _SOURCE.fullmatch(source):
        raise ApiError(
            400, "invalid_source", "'source' is 1-64 of a-z, 0-9, '-' and '_', starting alphanumeric"
        )
    return _accepted(lambda: _queue().etl(source), steps=3)


@blueprint.post("/wordcount")
def wordcount() -> tuple[Response, int]:
    body = _body()
    text = body.get("text", DEFAULT_TEXT)
    parts = body.get("parts", 3)
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT_LENGTH:
        raise ApiError(
            400, "invalid_text", f"'text' is a non-empty string of at most {MAX_TEXT_LENGTH} characters"
        )
    if not _is_int(parts) or not 1 <= parts <= workflow_tasks.MAX_CHORD_PARTS:
        raise ApiError(
            400, "invalid_parts", f"'parts' is an integer from 1 to {workflow_tasks.MAX_CHORD_PARTS}"
        )
    parts = min(parts, len(text.split()))
    return _accepted(lambda: _queue().word_count(text, parts), parts=parts)


@blueprint.post("/reminder")
def reminder() -> tuple[Response, int]:
    body = _body()
    note = _note(body)
    delay_s = body.get("delay_s", 1)
    if not isinstance(delay_s, int | float) or isinstance(delay_s, bool) or not 0 <= delay_s <= MAX_DELAY_S:
        raise ApiError(400, "invalid_delay", f"'delay_s' is a number of seconds from 0 to {MAX_DELAY_S:g}")
    eta = datetime.now(UTC) + timedelta(seconds=delay_s)
    return _accepted(
        lambda: _queue().reminder(note, float(delay_s)), eta=eta.isoformat(timespec="milliseconds")
    )


@blueprint.post("/followup")
def followup() -> tuple[Response, int]:
    note = _note(_body())
    return _accepted(lambda: _queue().followup(note))


@blueprint.post("/by-name")
def by_name() -> tuple[Response, int]:
    note = _note(_body())
    return _accepted(lambda: _queue().by_name(note))


def _body() -> dict[str, Any]:
    """The JSON object sent, or {} for an empty body (every field has a default)."""
    if not request.get_data(cache=True):
        return {}
    body = read_json_body()
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "send a JSON object (or no body at all)")
    return body


def _note(body: dict[str, Any]) -> str:
    note = body.get("note", "check the report")
    if not isinstance(note, str) or not note.strip() or len(note) > MAX_NOTE_LENGTH:
        raise ApiError(
            400, "invalid_note", f"'note' is a non-empty string of at most {MAX_NOTE_LENGTH} characters"
        )
    return note


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _accepted(publish: Callable[[], AsyncResult], **extra: Any) -> tuple[Response, int]:
    with broker_errors_as_unavailable():
        result = publish()
    return jsonify(job_id=result.id, trace_id=current_trace_id(), **extra), 202
