"""The Celery application: configuration and the per-process telemetry lifecycle.

    celery -A services.worker.celery_app worker --loglevel INFO

Tasks live in `services.worker.tasks`. The gateway imports this same app to queue them: the task objects
must be registered in the producer too, or the Celery instrumentation cannot close its PRODUCER span.

Process lifecycle (prefork pool):
- main process: `setup_logging` → our JSON logs; `worker_init` → the /metrics server. No tracer provider
  here: a BatchSpanProcessor thread created before the fork would not exist in the children.
- each child: `worker_process_init` → tracer provider + Celery and requests instrumentation;
  `worker_process_shutdown` → flush spans (prefork children skip atexit handlers) and mark their
  Prometheus files dead.
"""

from __future__ import annotations

import os

from celery import Celery, signals
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor

from services.common import settings, telemetry
from services.common.logging_setup import configure_logging
from services.worker import job_metrics

SERVICE = "worker"

app = Celery("tracehop", include=["services.worker.tasks"])
app.conf.update(
    broker_url=settings.broker_url(),
    result_backend=settings.redis_url(),
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=24 * 3600,
    # A job is acknowledged only after it ran, and re-queued if its process dies mid-way: no accepted
    # job is lost to a crash. The tasks are written to be idempotent so running twice is harmless.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # How long an unacknowledged job stays invisible before Redis hands it to another worker.
    broker_transport_options={"visibility_timeout": settings.env_int("TRACEHOP_VISIBILITY_TIMEOUT_S", 3600)},
    result_backend_transport_options={"retry_policy": {"timeout": 2.0}},
    broker_connection_retry_on_startup=True,
    # Publishing must fail fast when the broker is down, so the gateway can answer 503 within a request.
    task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
    task_track_started=True,
    worker_concurrency=settings.env_int("TRACEHOP_WORKER_CONCURRENCY", 2),
    # Our logs go through loguru as JSON: Celery must neither redirect stdout nor take the root logger.
    worker_redirect_stdouts=False,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
)


@signals.setup_logging.connect
def _setup_logging(**_: object) -> None:
    configure_logging(SERVICE)


@signals.worker_init.connect
def _start_metrics_server(**_: object) -> None:
    job_metrics.start_server(settings.env_int("TRACEHOP_WORKER_METRICS_PORT", 9101))


@signals.worker_process_init.connect
def _init_child(**_: object) -> None:
    configure_logging(SERVICE)
    telemetry.setup_tracing(SERVICE)
    telemetry.instrument([CeleryInstrumentor(), RequestsInstrumentor()])


@signals.worker_process_shutdown.connect
def _shutdown_child(**_: object) -> None:
    telemetry.shutdown_tracing()
    job_metrics.mark_process_dead(os.getpid())
