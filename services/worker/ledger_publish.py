"""A job is on the ledger BEFORE its message is published; a job that cannot be put there is not published.

Why: the ledger used to record a message in Celery's `after_task_publish` signal, after the publish. A
`make test` chaos run lost a job in between: the gateway's `LPUSH celery`, at once an `RPOP celery` by a
worker's waiting read, then Redis SIGKILLed before the worker's unacked record and before the ledger
write. The gateway logged `job not recorded in the ledger` and had answered 201; nothing could bring the
job back.

How: Celery builds the one function that publishes every task message of an app (`AMQP.send_task_message`:
`Task.apply_async`, `app.send_task` by name, retries, chord callbacks, beat); the app's AMQP class is an
argument of the app. Ours hands that function a producer whose `publish` writes the message to the ledger
first — exactly as it goes out: headers, trace context (the instrumentation's `before_task_publish` receiver
has run by then), body, exchange, routing key — and raises when the write fails, so nothing reaches the
broker and the caller sees the error (the gateway: 503 `queue_unavailable`, services/gateway/job_queue.py).
A `before_task_publish` receiver could not do this: Celery logs and swallows a receiver's exception
(celery/utils/dispatch/signal.py), so it cannot stop a publish.

Costs: the same one pipelined SET + ZADD per publish as before, now ahead of the publish rather than after
it. A publish that fails AFTER its record (the broker away, Redis up: RabbitMQ) leaves the job on the
ledger: the caller got 503, and the reconciler still publishes the job once the broker is back (the job was
asked for; a retry with the same Idempotency-Key queues the same id, which runs once).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.app.amqp import AMQP
from kombu import Exchange
from opentelemetry.instrumentation.celery import utils as celery_otel

from services.worker.job_claims import IdempotentTask
from services.worker.job_ledger import RECORDED_BEFORE_PUBLISH, JobLedger, ledger_for


class LedgerProducer:
    """A kombu Producer that puts each task message on the ledger before it publishes it.

    Everything but `publish` is the wrapped producer's (its connection, `revive`, ... which Celery's
    publish path also uses)."""

    def __init__(self, producer: Any, ledger: JobLedger) -> None:
        self._producer = producer
        self._ledger = ledger

    def publish(self, body: Any, exchange: Any = "", routing_key: str | None = None, **kwargs: Any) -> Any:
        headers = kwargs.get("headers") or {}
        if headers.get("id") and headers.get("task"):  # a task message (an event has neither)
            name = exchange.name if isinstance(exchange, Exchange) else exchange
            # Raises on a Redis error: the message is not published.
            self._ledger.record(headers, body, name or "", routing_key or "")
        return self._producer.publish(body, exchange=exchange, routing_key=routing_key, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


class LedgerAMQP(AMQP):
    """The app's AMQP, whose task publish function records every idempotent job first (module docstring)."""

    def _create_task_sender(self):
        send = super()._create_task_sender()
        app = self.app

        def send_task_message(producer: Any, name: str, message: Any, **options: Any) -> Any:
            if not _ledgered(app, name):
                return send(producer, name, message, **options)
            token = RECORDED_BEFORE_PUBLISH.set(True)
            try:
                return send(LedgerProducer(producer, ledger_for(app)), name, message, **options)
            except Exception as exc:
                _end_failed_publish_span(name, message[0].get("id"), exc)
                raise
            finally:
                RECORDED_BEFORE_PUBLISH.reset(token)

        return send_task_message


def _end_failed_publish_span(name: str, task_id: str | None, exc: Exception) -> None:
    """End the instrumentation's PRODUCER span of a publish that failed, as an error.

    OpenTelemetry's Celery instrumentation starts that span and makes it current in `before_task_publish`
    and ends it in `after_task_publish` — which a failed publish (the ledger's Redis or the broker away)
    never sends: the span would stay open and current in this thread, and the next request served on it
    would join the failed request's trace. Its own helpers find the span by task id."""
    task = celery_otel.retrieve_task_from_sender({"sender": name})
    found = celery_otel.retrieve_context(task, task_id or "", is_publish=True)
    if found is None:
        return
    _span, activation, _token = found
    activation.__exit__(type(exc), exc, exc.__traceback__)  # records the exception, ends, detaches
    celery_otel.detach_context(task, task_id or "", is_publish=True)


def _ledgered(app: Celery, name: str) -> bool:
    """Every job of ours: a task of this app (all IdempotentTask), or one sent by a name this process does
    not know (the gateway sends `archive_note` by name; the worker runs it as one of ours)."""
    task = app.tasks.get(name)
    return task is None or isinstance(task, IdempotentTask)
