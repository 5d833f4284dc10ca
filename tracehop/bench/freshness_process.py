"""The bench's freshness poller in a process of its own, so that it never holds the generator's
interpreter lock.

Why: the fixed-rate generator's threads time every request in the bench's process, and the poller
(`spans.FreshnessTracker`) ran there as one more thread. Each of its SQLite polls and each confirmation
through the query API (reading and parsing the whole trace) holds the interpreter lock — measured with
`python -m tracehop.bench.tail --freshness` at up to 1.1 ms and 5.4 ms of thread CPU on a busy machine
(bench/runs/2026-11-30-tail-requests-busy-machine.json) — and a generator thread whose answer arrives
meanwhile reads its clock only once the poller lets go (or the 5 ms switch interval forces it). The
poller runs in the traced windows only (ten polls and, at 100 req/s, five confirmations a second), so
whatever delay it caused landed on the traced latencies alone; there it held the lock for 0.67 s of CPU
in a 102 s window, and a p99 is made of 1% of the requests. In a child process it costs the machine the
same CPU (recorded per window as `machine.freshness_poller_cpu_s`) but holds no lock the generator needs.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

from tracehop.bench import procs
from tracehop.bench.spans import FreshnessResult, FreshnessTracker, TraceStoreReader
from tracehop.traces.query import TraceQuery

START_TIMEOUT_S = 60.0


class FreshnessProcess:
    """`FreshnessTracker`'s interface (`start`, `add`, `finish`), its poller in a child process."""

    def __init__(self, db_path: Path, query_url: str, expected_spans: int, poll_s: float = 0.1) -> None:
        # spawn, not fork: the bench's process runs threads, and the child needs none of its state.
        context = multiprocessing.get_context("spawn")
        self._inbox: Any = context.Queue()
        self._outbox: Any = context.Queue()
        self._process = context.Process(
            target=_serve,
            args=(os.fspath(db_path), query_url, expected_spans, poll_s, self._inbox, self._outbox),
            name="bench-freshness",
            daemon=True,
        )

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def cpu_s(self) -> float:
        """The poller process's CPU so far (0 once it is gone)."""
        sample = procs.read_process(self._process.pid) if self._process.pid else None
        return sample.cpu_s if sample else 0.0

    def start(self) -> FreshnessProcess:
        self._process.start()
        if self._outbox.get(timeout=START_TIMEOUT_S) != "ready":
            raise RuntimeError("the freshness poller did not start")
        return self

    def add(self, trace_id: str, responded_at: float) -> None:
        """Called from the load generator's threads: a queue put (the pickling and the pipe write are
        the queue's feeder thread's, a few microseconds)."""
        self._inbox.put(("add", trace_id, responded_at))

    def finish(self, timeout_s: float = 15.0) -> FreshnessResult:
        """Wait for the pending traces (at most `timeout_s`), then stop; the rest count as incomplete."""
        self._inbox.put(("finish", timeout_s))
        delays, incomplete = self._outbox.get(timeout=timeout_s + START_TIMEOUT_S)
        self._process.join(timeout=10)
        return FreshnessResult(list(delays), incomplete)


def _serve(db_path: str, query_url: str, expected: int, poll_s: float, inbox: Any, outbox: Any) -> None:
    reader = TraceStoreReader(Path(db_path))
    tracker = FreshnessTracker(reader, TraceQuery(query_url), expected, poll_s).start()
    outbox.put("ready")
    while True:
        message = inbox.get()
        if message[0] == "add":
            tracker.add(message[1], message[2])
        else:
            result = tracker.finish(message[1])
            reader.close()
            outbox.put((result.delays_s, result.incomplete))
            return
