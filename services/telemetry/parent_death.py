"""A prefork pool child whose worker main process dies exports its queued spans before it dies too.

Celery makes each pool child die with its main process: it sets the child's parent-death signal to
SIGKILL (celery/concurrency/prefork.py, `process_initializer`). So `kill -9` of a worker's main process
also killed its children at once, and with them the spans their batch span processor still held: the
`run/…` CONSUMER spans of every job a child finished in the last OTEL_BSP_SCHEDULE_DELAY (`make chaos`
counted 8-18 such incomplete traces per worker kill at 40 requests/s).

Why not simply SIGTERM as the parent-death signal (the fix that was reverted): the kernel sends the
parent-death signal each time the *thread* the child counts as its parent exits, and a child whose parent
thread dies is handed to another live thread of the same process, then that one's death signals it again
(prctl(2): "the 'parent' in this case is considered to be the thread that created this process"). The
worker's main process has several threads, so one SIGKILL of it sent its children SIGTERM once, twice or
three times, a few ms apart (strace: `--- SIGTERM` twice from the same dying pid, 4.5 ms apart). billiard's
handler (`billiard.common._shutdown_cleanup`) treats a second terminate signal as "something is very
wrong": the first one resets SIGTERM to SIG_DFL and raises SystemExit, so the second one killed the child
in the middle of its flush (strace: killed by SIGTERM right after the exporter's `socket()`). How many
signals arrive depends on which of the dying process's threads exits first: hence a test that passed
in one run and failed in the next.

So the parent-death signal here is one of our own, not billiard's: `PARENT_DEATH_SIGNAL`, a real-time
signal that nothing in Celery, billiard or this project uses and that billiard's `reset_signals` leaves
alone (it resets only the terminate signals, after `worker_process_init`). Its handler:
- acts once: it ignores the signal from then on, so the second and third deliveries do nothing;
- does nothing if the child is already on its way out (billiard's own terminate handler has fired, or the
  exit that flushes has begun, `leaving()`), so it never raises into the flush;
- otherwise calls the child's own terminate handler (billiard's, installed by `reset_signals`) right
  there: SystemExit, flagged as a terminate, exactly as `supervisorctl stop` (SIGTERM to the group) takes
  a child out: a job it was running is not reported, the child leaves through `worker_process_shutdown`
  (celery.py: the flush, bounded by the export timeout).

One path is left where that SystemExit can still cut the flush short: the main's death also closes the
child's job pipe, and an idle child that reads end-of-file first leaves on its own (billiard raises
SystemExit from its read); if the parent-death signal is handled after that but before `leaving()` runs
(a few bytecodes between billiard's `_do_exit` and our receiver), `worker_process_shutdown` is skipped.
The exception then goes up through billiard's `Process._bootstrap`, which runs the multiprocessing exit
function and its finalizers: the flush is registered there too (`multiprocessing.util.Finalize`), and
since nothing raises a second time, it completes.

The child still dies with its main process; a job it was running ends as under SIGKILL (not
acknowledged: the broker or the job ledger hands it out again).
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from billiard.common import TERM_SIGNAL, terminate_handler_fired
from billiard.util import Finalize, set_pdeathsig

# SIGRTMIN + 1: a real-time signal of our own (see above). Its default action is to terminate, which is
# Celery's intent should the handler ever be missing.
PARENT_DEATH_SIGNAL = signal.SIGRTMIN + 1

# Run before multiprocessing's own finalizers (which have no priority or priority 0).
_FLUSH_PRIORITY = 100

_state = {"leaving": False, "notified": False}


def flush_spans_when_parent_dies(flush: Callable[[], None]) -> None:
    """Call in each pool child at `worker_process_init` (after Celery's process_initializer set SIGKILL).
    `flush` exports what is still queued; it must be idempotent (it may be called twice)."""
    if not sys.platform.startswith("linux"):
        return  # no parent-death signal elsewhere (Celery's SIGKILL is Linux-only too)
    _state["leaving"] = _state["notified"] = False  # a fresh child, whatever the parent had
    signal.signal(PARENT_DEATH_SIGNAL, _on_parent_death)  # the handler first, then the signal
    set_pdeathsig(PARENT_DEATH_SIGNAL)
    Finalize(None, flush, exitpriority=_FLUSH_PRIORITY)


def leaving() -> None:
    """Call first on the child's way out (`worker_process_shutdown`), before the flush: from here on a
    parent-death signal must not raise into it."""
    _state["leaving"] = True


def _on_parent_death(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # the kernel may send it again, once per dying parent thread
    if _state["notified"]:
        return  # tripped twice before the line above ran
    _state["notified"] = True
    if _state["leaving"] or terminate_handler_fired():
        return  # already on its way out, through the flush
    terminate = signal.getsignal(TERM_SIGNAL)
    if callable(terminate):
        terminate(TERM_SIGNAL, frame)  # billiard's _shutdown_cleanup: raises SystemExit
    # Someone replaced billiard's handler with SIG_DFL/SIG_IGN: leave anyway, as Celery wants.
    raise SystemExit(os.EX_SOFTWARE)
