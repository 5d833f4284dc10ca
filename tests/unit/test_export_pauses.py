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


def turns_during_encoding(pause):
    global stop
    stop = False
    start = turns[0]
    for _ in range(BATCHES):
        encode_spans_json(batch, pause=pause, pause_every=PAUSE_EVERY_SPANS)
    stop = True
    return turns[0] - start
"""

THREADS = """
import sys, threading, time
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


def turns_of_the_request(setup: str) -> tuple[int, int]:
    script = setup + COMMON + "print(turns_during_encoding(None), turns_during_encoding(let_requests_run))"
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    without, with_pauses = map(int, done.stdout.split())
    return without, with_pauses


def test_a_request_thread_runs_between_slices_of_a_batch() -> None:
    without, with_pauses = turns_of_the_request(THREADS)
    assert without == 0
    assert with_pauses >= 1


def test_a_request_greenlet_runs_between_slices_under_gevent() -> None:
    without, with_pauses = turns_of_the_request(GEVENT)
    assert without == 0
    # Every pause yields to the hub, which runs the ready greenlet: one turn per pause.
    assert with_pauses >= 5 * (512 // 32 - 1)
