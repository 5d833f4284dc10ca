"""The export thread lets requests run while it encodes a batch (otlp_json_exporter.let_requests_run).

Each check runs in a fresh interpreter of its own, because each needs a process-wide setting: gevent's
monkey patches (the gateway's worker), or a switch interval of a whole second, so that the interpreter
never takes the lock from the encoding thread by itself and only the exporter's own pauses can let the
other thread run. A "request" counts the turns it gets while five batches of 512 recorded spans are
encoded: none without pauses (which shows the check can fail), some with them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

COMMON = """
from services.telemetry.otlp_json_encoder import encode_spans_json
from services.telemetry.otlp_json_exporter import PAUSE_EVERY_SPANS, let_requests_run
from tracehop.bench.span_sample import batches, sdk_spans

batch = next(batches(sdk_spans(), 512))
BATCHES = 5


def turns_during_encoding(pause, every=PAUSE_EVERY_SPANS):
    global stop
    stop = False
    start = turns[0]
    for _ in range(BATCHES):
        encode_spans_json(batch, pause=pause, pause_every=every)
    stop = True
    return turns[0] - start
"""

# Both threads on one core. On two idle cores the released lock's waiter wakes on the other core, later
# than sched_yield returns, and the encoder takes the lock back first: 0 turns in 640 pauses, run after
# run, on an idle machine (and thousands beside four busy loops). On one core, sched_yield hands the core,
# and with it the free lock, to the waiting thread: 60-80 turns idle, thousands beside busy loops. That is
# the case the pauses are for: a worker whose request threads wait for a core the encoder holds.
THREADS = """
import os, sys, threading, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
sys.setswitchinterval(1.0)
turns, stop = [0], False
def request():
    while True:
        turns[0] += 1
        time.sleep(0.0002)
threading.Thread(target=request, daemon=True).start()
time.sleep(0.05)
"""

GEVENT = """
from gevent import monkey
monkey.patch_all()
import gevent
turns, stop = [0], False
def request():
    while True:
        turns[0] += 1
        gevent.sleep(0)
gevent.spawn(request)
gevent.sleep(0.01)
"""


def turns_of_the_request(setup: str, every: str = "PAUSE_EVERY_SPANS") -> tuple[int, int]:
    script = (
        setup
        + COMMON
        + f"print(turns_during_encoding(None), turns_during_encoding(let_requests_run, {every}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    without, with_pauses = map(int, done.stdout.split())
    return without, with_pauses


def test_a_request_thread_runs_between_slices_of_a_batch() -> None:
    # With threads the hand-over is up to the scheduler (THREADS pins both to one core, where it is
    # reliable); the check pauses every 4 spans, 640 chances, for a margin.
    without, with_pauses = turns_of_the_request(THREADS, every="4")
    assert without == 0
    assert with_pauses >= 1, (without, with_pauses)


def test_a_request_greenlet_runs_between_slices_under_gevent() -> None:
    without, with_pauses = turns_of_the_request(GEVENT)
    assert without == 0, (without, with_pauses)
    # Every pause yields to the hub, which runs the ready greenlet: one turn per pause.
    assert with_pauses >= 5 * (512 // 32 - 1)
