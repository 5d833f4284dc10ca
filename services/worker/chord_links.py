"""Span links from a chord's callback to every task of its header: the fan-in a plain parent cannot show.

What the Celery instrumentation does: each CONSUMER span is the child of the span that published its
message. A chord's callback is published by the result backend from inside the header task that
finished LAST (Redis backend: `on_chord_part_return`, while that task's `run` span is current). So the
callback hangs under one header task, picked by timing, and the trace does not say it waited for all.

What is right: the callback depends on ALL header tasks. OpenTelemetry's messaging conventions record
such fan-in with span links, so we keep the parent the instrumentation gives (the trace stays one tree,
and that parent did cause the publish) and add one link per header task's `run` span:

1. a header task, as it starts, appends its span context to a Redis list named after the callback's
   task id (each header message carries the callback's signature, id included);
2. when the last header task publishes the callback, the list goes into the callback's message headers;
3. when the callback starts, its CONSUMER span gets one link per entry.

Cost: one RPUSH per header task and one LRANGE per chord, on the result backend's Redis; every other
job pays two attribute lookups. Redis trouble costs the links, never the job.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import signals
from celery._state import get_current_task
from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import SpanContext, TraceFlags

from services.worker.worker_redis import worker_redis

HEADER = "tracehop_chord_links"
KEY_PREFIX = "tracehop:chord-links:"
KEY_TTL_S = 24 * 3600
LINK_ATTRIBUTES = {"tracehop.link": "chord header task"}


def connect() -> None:
    """Connect the receivers. Call it AFTER CeleryInstrumentor().instrument(): Celery runs receivers in
    the order they were connected, and ours need the job's span to be current."""
    signals.task_prerun.connect(_on_task_start, weak=False, dispatch_uid="tracehop.chord_links.prerun")
    signals.before_task_publish.connect(_on_publish, weak=False, dispatch_uid="tracehop.chord_links.publish")


def callback_id(request: Any) -> str | None:
    """The task id of the chord callback this job is a header task of (None for other jobs)."""
    callback = getattr(request, "chord", None)
    if not callback:
        return None
    options = callback.get("options") if isinstance(callback, dict) else getattr(callback, "options", None)
    return (options or {}).get("task_id")


def _on_task_start(task: Any = None, **_: object) -> None:
    if task is None:
        return
    request = task.request
    entries = getattr(request, HEADER, None)
    if entries:
        _add_links(str(entries))
    callback = callback_id(request)
    context = trace.get_current_span().get_span_context()
    if callback and context.is_valid:
        key = KEY_PREFIX + callback
        entry = f"{trace.format_trace_id(context.trace_id)}-{trace.format_span_id(context.span_id)}"
        try:
            with worker_redis().pipeline() as pipe:
                pipe.rpush(key, entry).expire(key, KEY_TTL_S).execute()
        except redis.RedisError as error:
            logger.warning("chord link not recorded", callback_id=callback, error=type(error).__name__)


def _on_publish(headers: dict[str, Any] | None = None, **_: object) -> None:
    running = get_current_task()
    if not headers or running is None or callback_id(running.request) != headers.get("id"):
        return
    try:
        raw = worker_redis().lrange(KEY_PREFIX + headers["id"], 0, -1)
    except redis.RedisError as error:
        logger.warning("chord links not read", callback_id=headers["id"], error=type(error).__name__)
        return
    # A retried header task started twice: both attempts are linked, each once.
    headers[HEADER] = ",".join(dict.fromkeys(value.decode() for value in raw))


def _add_links(entries: str) -> None:
    span = trace.get_current_span()
    for entry in entries.split(","):
        trace_hex, _, span_hex = entry.partition("-")
        try:
            context = SpanContext(
                int(trace_hex, 16),
                int(span_hex, 16),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        except ValueError:
            continue
        span.add_link(context, LINK_ATTRIBUTES)
