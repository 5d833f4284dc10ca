"""The Celery application: configuration, and what the worker adds to the traced process lifecycle.

    celery -A services.worker.celery_app worker --loglevel INFO

Tasks live in `services.worker.tasks` and `services.worker.workflow_tasks`; the gateway imports this same
app and those modules to queue them, so the Celery instrumentation finds each task object and its
PRODUCER span covers the publish. (`services.worker.named_tasks` is the exception on purpose: the gateway
sends its job by name; docs/context-propagation.md says what that changes.)

Process lifecycle, for every pool (TRACEHOP_WORKER_POOL): services/telemetry/celery.py wires logs and
tracing to Celery's signals (`instrument_celery` below); this module adds, through its hooks, the job metrics
and their /metrics server (main process, `worker_init`: a process that only sends tasks, like the gateway,
counts nothing), counted span export, chord links, and marking a dead child's Prometheus files dead. The
configuration is read from the environment when Celery first needs it (`celery_config`), not when this
module is imported.
celery beat (`celery -A services.worker.celery_app beat`) gets its own tracer provider (service `beat`), so
each scheduled job's trace starts with beat's PRODUCER span.

The "broken on purpose" switches (services/demo/broken_on_purpose.py) undo parts of this on request.
"""

from __future__ import annotations

import os

from celery import Celery

from services.demo import broken_on_purpose, fault_injection
from services.metrics import multiprocess
from services.metrics.span_export_metrics import CountingSpanExporter
from services.telemetry.celery import CeleryHooks, instrument_celery
from services.web import settings
from services.worker import chord_links, job_ledger, job_metrics
from services.worker.job_claims import IdempotentTask
from services.worker.ledger_publish import LedgerAMQP
from services.worker.log_privacy import hide_job_results
from services.worker.result_backend import FinalStateRedisBackend

SERVICE = "worker"
BEAT_SERVICE = "beat"


class FaultInjectingTask(IdempotentTask):
    """Runs the faults a request's baggage asks of the worker (`tracehop.fault=worker:...`) inside the
    job's span, before the job. A Task class and not a task_prerun receiver: Celery logs and swallows
    exceptions raised by signal receivers, so an `error` fault could not fail the job from there."""

    def before_job(self) -> None:
        fault_injection.inject_faults(SERVICE)


class WorkerCelery(Celery):
    """Celery, with its task class chosen when Celery builds its tasks (when the worker starts, or when a
    producer first sends one) rather than when this module is imported, a publish path that puts each
    job on the ledger before it publishes it (ledger_publish.py), and a result backend on which a job's
    final state stays final (result_backend.py)."""

    amqp_cls = LedgerAMQP
    backend_cls = FinalStateRedisBackend

    def create_task_cls(self) -> type[IdempotentTask]:
        # Only when allowed: otherwise every job runs through Celery's plain (faster) call path.
        self.task_cls = FaultInjectingTask if fault_injection.enabled() else IdempotentTask
        return super().create_task_cls()


def _redelivery_options(visibility_timeout_s: int) -> dict[str, int]:
    """kombu looks for expired unacknowledged jobs (a worker that died holding them) only every
    interval x throttle seconds, 10 x 10 by default: a job would wait up to 100 s past its visibility
    timeout. Sweep every tenth of the timeout (1-10 s) instead; each sweep is one ZRANGE."""
    return {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": min(10, max(1, visibility_timeout_s // 10)),
        "unacked_restore_throttle": 1,
    }


def celery_config() -> dict[str, object]:
    """The app's configuration: the environment's settings (services/web/settings.py) as Celery's keys.

    Given to Celery as a promise (`add_defaults`), so it is read when Celery first needs its configuration,
    not at import; a test's `app.conf.update(...)` still wins over it.
    """
    worker = settings.worker_config()
    return {
        "broker_url": worker["broker_url"],
        "result_backend": worker["result_backend"],
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_expires": 24 * 3600,
        # A job is acknowledged only after it ran, and re-queued if its process dies mid-way: no accepted
        # job is lost to a crash. The tasks are written to be idempotent so running twice is harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # How long an unacknowledged job stays invisible before Redis hands it to another worker.
        "broker_transport_options": _redelivery_options(worker["visibility_timeout_s"]),
        "result_backend_transport_options": {"retry_policy": {"timeout": 2.0}},
        "broker_connection_retry_on_startup": True,
        # Publishing must fail fast when the broker is down, so the gateway can answer 503 within a request.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # STARTED is written by IdempotentTask once a job has claimed its id (job_claims.py): Celery's own
        # would be written by a duplicate copy too, over the finished job's state.
        "task_track_started": False,
        "worker_concurrency": worker["worker_concurrency"],
        # Our logs go through loguru as JSON: Celery must neither redirect stdout nor take the root logger.
        "worker_redirect_stdouts": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # A private queue name lets test runs share one RabbitMQ vhost without taking each other's jobs.
        "task_default_queue": worker["task_default_queue"],
        # Broken on purpose #4: every pool child exits after one job (and, below, without a flush).
        "worker_max_tasks_per_child": 1 if broken_on_purpose.NO_FLUSH_ON_CHILD_EXIT.on else None,
        # celery beat: a periodic job, each run a trace of its own (tests shorten the period).
        "beat_schedule": {"heartbeat": {"task": "heartbeat", "schedule": worker["beat_interval_s"]}},
        # Celery's scheduler, plus a marker naming the beat process once it has loaded the schedule and
        # ticked: what says a restarted beat serves again (beat_scheduler.py).
        "beat_scheduler": "services.worker.beat_scheduler:ReadyMarkingScheduler",
        # Write each run's time to the schedule file as soon as it is sent (Celery: every 3 minutes): a
        # beat SIGKILLed before that sync would send again, on restart, a run it had already sent.
        "beat_sync_every": 1,
        # The welcome e-mail's retry budget (tests shorten the poison job's life with a smaller one).
        "task_annotations": {"send_welcome_email": {"max_retries": worker["mail_max_retries"]}},
        # Ours, read by the worker's hooks below.
        "tracehop_metrics_port": worker["metrics_port"],
        "tracehop_metrics_addr": worker["metrics_addr"],
    }


app = WorkerCelery(
    "tracehop",
    # Loaded by the worker only: the gateway imports tasks and workflow_tasks itself, never named_tasks
    # (it sends those jobs by name).
    include=["services.worker.tasks", "services.worker.workflow_tasks", "services.worker.named_tasks"],
)
app.add_defaults(celery_config)

# Every job of ours is on the ledger until it finishes (job_ledger.py): the gateway's reconciler publishes a
# job again if its message was lost between the broker and a dying worker. This app's publishes record
# before they leave (LedgerAMQP); this records what another app in the process publishes of our jobs.
job_ledger.connect_recording(app)


def _after_logging_setup() -> None:
    broken_on_purpose.warn_if_any(SERVICE)
    hide_job_results()  # job results (a report holds a name) stay out of the log


def _start_worker_metrics() -> None:
    # Main process, before the pool forks: the children inherit the receivers that count their jobs.
    job_metrics.connect_signals()
    job_metrics.start_server(app.conf.tracehop_metrics_port, app.conf.tracehop_metrics_addr)


def _after_tracing_setup() -> None:
    if broken_on_purpose.B3_WORKER.on:
        broken_on_purpose.use_b3_propagation()  # broken on purpose #3
    if not settings.tracing_disabled():
        chord_links.connect()  # after the instrumentation, whose span ours need


def _mark_metrics_dead() -> None:
    multiprocess.mark_process_dead(os.getpid())


instrument_celery(
    SERVICE,
    beat_service=BEAT_SERVICE,
    hooks=CeleryHooks(
        # Counted, so that spans lost while the backend is down show in /metrics (span_export_metrics.py).
        wrap_exporter=CountingSpanExporter,
        after_logging_setup=_after_logging_setup,
        on_worker_start=_start_worker_metrics,
        after_tracing_setup=_after_tracing_setup,
        on_child_exit=_mark_metrics_dead,
        # Broken on purpose #2: tracing set up in the main process, before the pool forks.
        trace_in_children=not broken_on_purpose.SETUP_BEFORE_FORK.on,
        # Broken on purpose #4: no flush when a pool child exits.
        flush_on_child_exit=not broken_on_purpose.NO_FLUSH_ON_CHILD_EXIT.on,
    ),
)
