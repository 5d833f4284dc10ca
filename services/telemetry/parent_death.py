"""A prefork pool child whose worker main process dies exports its queued spans before it dies too.

Celery makes each pool child die with its main process: it sets the child's parent-death signal to
SIGKILL (celery/concurrency/prefork.py, `process_initializer`). So `kill -9` of a worker's main process
also killed, at once, its children — and with them the spans their batch span processor still held: the
`run/…` CONSUMER spans of every job a child finished in the last OTEL_BSP_SCHEDULE_DELAY. The jobs were
done (SUCCESS, acknowledged), their traces incomplete: `make chaos` counted 8-18 such traces per worker
kill at 40 requests/s, in the window BEFORE the kill (chaos files a trace under the window its request
was sent in), the users master's.

Here the parent-death signal is billiard's terminate signal (SIGTERM) instead. A pool child already
handles it the way it handles `supervisorctl stop` (which signals the program's whole process group):
billiard's handler raises SystemExit in the child, whose way out sends `worker_process_shutdown`, where
the spans are flushed (celery.py; bounded by the export timeout). The child still dies with its main
process; a job it was running ends as under SIGKILL (not acknowledged: the broker or the job ledger
hands it out again).
"""

from __future__ import annotations

from billiard.common import TERM_SIGNAL
from billiard.util import set_pdeathsig


def flush_spans_when_parent_dies() -> None:
    """Call in each pool child, after Celery's process_initializer set SIGKILL (`worker_process_init`)."""
    set_pdeathsig(TERM_SIGNAL)
