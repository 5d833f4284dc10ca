"""Four classic mistakes of tracing Celery, each behind an environment variable: all OFF by default.

Turn one on for a stack, send one request, and the trace breaks the way docs/context-propagation.md shows
(tests/integration/test_broken_on_purpose.py proves each). They exist to teach; never set them anywhere
that matters. A service that has one on says so in a WARNING log line at start.

TRACEHOP_BROKEN_UNINSTRUMENTED_PRODUCER
    The gateway does not instrument Celery (only the worker does): no PRODUCER span, no context in the
    message, and the job starts a trace of its own.
TRACEHOP_BROKEN_SETUP_BEFORE_FORK
    The worker sets up tracing in its main process, before the prefork pool forks its children. See
    SETUP_BEFORE_FORK below for what that breaks with the SDK we lock (less than the folklore says).
TRACEHOP_BROKEN_B3_WORKER
    The worker propagates B3 (as with OTEL_PROPAGATORS=b3) while gateway and users speak W3C: the job,
    and the users request it makes, each start a new trace.
TRACEHOP_BROKEN_NO_FLUSH_ON_CHILD_EXIT
    worker_max_tasks_per_child=1 and no flush in worker_process_shutdown: each pool child exits after
    one job, and the job's spans die with it.
"""

from __future__ import annotations

from dataclasses import dataclass

from loguru import logger
from opentelemetry import propagate

from services.web import settings


@dataclass(frozen=True)
class Switch:
    variable: str
    mistake: str

    @property
    def on(self) -> bool:
        # Read each time: cheap, and only at process start-up (never per request or per job).
        return settings.env_bool(self.variable, False)


UNINSTRUMENTED_PRODUCER = Switch(
    "TRACEHOP_BROKEN_UNINSTRUMENTED_PRODUCER",
    "the gateway does not instrument Celery: no context is injected into the task messages",
)
# What it breaks with the SDK we lock (observed, see the test): the SDK re-creates its batch thread in
# each forked child (os.register_at_fork), so spans still flow, but every child shares the tracer
# provider of the parent, which the child's own setup can no longer replace, and the flush at child exit
# reaches nothing of it: the spans a child holds when it exits are lost.
SETUP_BEFORE_FORK = Switch(
    "TRACEHOP_BROKEN_SETUP_BEFORE_FORK",
    "the worker sets up tracing in its main process, before the prefork pool forks its children",
)
B3_WORKER = Switch(
    "TRACEHOP_BROKEN_B3_WORKER",
    "the worker injects and extracts B3 headers while the gateway and users speak W3C traceparent",
)
NO_FLUSH_ON_CHILD_EXIT = Switch(
    "TRACEHOP_BROKEN_NO_FLUSH_ON_CHILD_EXIT",
    "worker_max_tasks_per_child=1 and no span flush when a pool child exits",
)

ALL = (UNINSTRUMENTED_PRODUCER, SETUP_BEFORE_FORK, B3_WORKER, NO_FLUSH_ON_CHILD_EXIT)


def warn_if_any(service: str) -> None:
    """One WARNING line per switch that is on, so nobody mistakes a broken trace for a bug."""
    for switch in ALL:
        if switch.on:
            logger.warning(
                "broken on purpose", service=service, switch=switch.variable, mistake=switch.mistake
            )


def use_b3_propagation() -> None:
    """What OTEL_PROPAGATORS=b3 does, for this process only: B3 single-header, and nothing else (not
    even W3C baggage), replaces the global propagator every instrumentation injects and extracts with."""
    from opentelemetry.propagators.b3 import B3SingleFormat

    propagate.set_global_textmap(B3SingleFormat())
