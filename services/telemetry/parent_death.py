"""A prefork pool child whose worker main process dies exports its queued spans before it dies too.

Celery makes each pool child die with its main process: it sets the child's parent-death signal to
SIGKILL (celery/concurrency/prefork.py, `process_initializer`). So `kill -9` of a worker's main process
also killed, at once, its children — and with them the spans their batch span processor still held: the
`run/…` CONSUMER spans of every job a child finished in the last OTEL_BSP_SCHEDULE_DELAY. The jobs were
done (SUCCESS, acknowledged), their traces incomplete: the `make chaos` run lost 8-18 worker spans per
kill at 40 requests/s, counted in the window BEFORE the kill (the users master's), since chaos files a
trace under the window its request was sent in.

Here the parent-death signal is SIGTERM instead, handled by: export what is queued (at most
FLUSH_BUDGET_S), then die of SIGTERM as the default action would — the child still never outlives its
main process by more than the budget. The export runs on a thread of its own: the handler interrupts the
main thread anywhere, possibly inside the span processor holding its lock, and a flush on the main
thread would then wait for that lock forever; from a thread it just runs out of budget.
"""

from __future__ import annotations

import os
import signal
import threading

from billiard.util import set_pdeathsig

from services.telemetry.setup import shutdown_tracing

# Long enough for one export to a live backend (a few ms); short enough that a child stuck on a dead
# backend is gone within a second of its main process.
FLUSH_BUDGET_S = 1.0


def flush_spans_when_parent_dies() -> None:
    """Call in each pool child, after Celery's process_initializer (its `worker_process_init` signal)."""
    signal.signal(signal.SIGTERM, _flush_then_die)
    set_pdeathsig(signal.SIGTERM)


def _flush_then_die(signum: int, _frame: object) -> None:
    flushing = threading.Thread(target=shutdown_tracing, name="flush-on-sigterm", daemon=True)
    flushing.start()
    flushing.join(FLUSH_BUDGET_S)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
