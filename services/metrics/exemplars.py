"""Exemplars (a trace id on a histogram bucket) in prometheus_client's multiprocess mode.

Multiprocess mode, which gunicorn workers and Celery's prefork children need for correct counters, keeps
values in mmap files and no exemplars at all, so Grafana could never jump from a latency spike to a trace.
This module keeps them beside those files:

- each process calls `record(metric, labels, value, buckets)` once per observation, inside the request's
  or job's span. That is a dict assignment: the latest exemplar per (metric, labels, bucket).
- a daemon thread of that process writes its exemplars to `$PROMETHEUS_MULTIPROC_DIR/exemplars_<pid>.json`
  about once a second, atomically, and only when something changed.
- the process answering /metrics wraps its collector (usually a MultiProcessCollector) in
  `ExemplarCollector`, which puts on each `_bucket` sample the newest exemplar any process recorded for
  it. Only the OpenMetrics exposition writes exemplars. Prometheus asks for it first in its Accept
  header (choose_encoder() picks it) and keeps them with `--enable-feature=exemplar-storage`; the plain
  text format, which other scrapers get, leaves them out.

    http_request_duration_seconds_bucket{le="0.025",method="GET",status="200",url_rule="/api/users"} 7.0 \
        # {span_id="00f067aa0ba902b7",trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.0123 1767225600.123
    (one line; the OpenMetrics text format)

Without PROMETHEUS_MULTIPROC_DIR (tests, a single process) nothing is written: the exemplars stay in the
recorder's memory, and `ExemplarCollector` reads them from there.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple, Protocol

from loguru import logger
from opentelemetry import trace
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar, Sample
from prometheus_client.utils import INF, floatToGoString

from services.web import settings

FLUSH_INTERVAL_S = 1.0
# A trace store keeps traces for a while, not forever; an exemplar pointing at a long-gone trace is a
# dead link, and a dead process's file would otherwise be served for ever.
MAX_AGE_S = 600.0
# OpenMetrics: "the combined length of the label names and values of an Exemplar's LabelSet MUST NOT
# exceed 128 UTF-8 character code points". Prometheus drops longer ones at scrape time.
MAX_LABEL_CHARS = 128
FILE_PREFIX = "exemplars_"

# (metric name, sorted label pairs without `le`, bucket upper bound)
Key = tuple[str, tuple[tuple[str, str], ...], float]


class Entry(NamedTuple):
    value: float
    timestamp: float  # Unix seconds
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class ExemplarRecorder:
    """The latest exemplar of each (metric, labels, bucket) seen by this process.

    `directory=None` means $PROMETHEUS_MULTIPROC_DIR, read when the first exemplar is recorded; when that
    is unset too, nothing is written to disk. After a fork the child starts from nothing, with its own
    thread and file: the parent's exemplars are the parent's to write.
    """

    def __init__(
        self,
        directory: str | None = None,
        *,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        max_age_s: float = MAX_AGE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._configured_directory = directory
        self._flush_interval_s = flush_interval_s
        self.max_age_s = max_age_s
        self._clock = clock
        self._reset()
        _RECORDERS.add(self)

    def _reset(self) -> None:
        # Span ids are kept as ints: formatting them as hex waits for the flush, off the hot path.
        self._latest: dict[Key, tuple[float, float, int, int]] = {}
        self._dirty = False
        self._started = False
        self._path: str | None = None
        self._stop = threading.Event()

    def record(self, metric: str, labels: Mapping[str, str], value: float, buckets: Sequence[float]) -> None:
        """Remember `value` as the exemplar of its bucket, with the current span's ids.

        `labels` and `buckets` must be exactly the histogram's (without `le`); `buckets` sorted, with or
        without +Inf. Does nothing outside a sampled span: an unsampled trace is not in any trace store.
        """
        context = trace.get_current_span().get_span_context()
        if not (context.is_valid and context.trace_flags.sampled):
            return
        if not self._started:
            self._start()
        # Prometheus buckets are inclusive (value <= le), hence bisect_left.
        index = bisect_left(buckets, value)
        bound = float(buckets[index]) if index < len(buckets) else INF
        # Label values are made strings later, in entries(): off the hot path.
        key = (metric, tuple(sorted(labels.items())), bound)
        self._latest[key] = (value, self._clock(), context.trace_id, context.span_id)
        # Set after the assignment: a flush that clears the flag in between has already seen the value
        # or will see the flag set again. No lock on the hot path.
        self._dirty = True

    def _start(self) -> None:
        self._started = True
        directory = self._configured_directory or settings.prometheus_multiproc_dir()
        if not directory:
            return
        self._path = exemplar_file(directory, os.getpid())
        threading.Thread(target=self._run, name="exemplar-flush", daemon=True).start()

    def _run(self) -> None:
        stop = self._stop  # this thread's own event: a fork replaces the attribute, not the object
        while not stop.wait(self._flush_interval_s):
            try:
                self.flush()
            except Exception:  # a full disk must not end the thread for good
                logger.exception("could not write exemplars to {}", self._path)

    def flush(self) -> bool:
        """Drop old exemplars; write the file if anything was recorded since the last write.

        Returns whether the file was written. The thread calls this; tests may too.
        """
        now = self._clock()
        for key, item in list(self._latest.items()):
            # `is item`: not an exemplar recorded for the same key since the copy was taken.
            if now - item[1] > self.max_age_s and self._latest.get(key) is item:
                self._latest.pop(key, None)
        if not self._dirty or self._path is None:
            return False
        self._dirty = False
        # One row per exemplar: [metric, {labels}, le as rendered ("0.05", "+Inf"), value, timestamp,
        # trace_id, span_id]. JSON: readable when debugging, and nothing to install.
        rows = [
            [metric, dict(labels), floatToGoString(bound), *entry]
            for (metric, labels, bound), entry in self.entries().items()
        ]
        # Whole file or nothing: the collector may read at any moment.
        temporary = f"{self._path}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            json.dump(rows, file, separators=(",", ":"))
        os.replace(temporary, self._path)
        return True

    def entries(self) -> dict[Key, Entry]:
        """This process's exemplars that are not too old."""
        oldest = self._clock() - self.max_age_s
        return {
            (metric, tuple((name, str(label)) for name, label in labels), bound): Entry(
                value, timestamp, trace.format_trace_id(trace_id), trace.format_span_id(span_id)
            )
            for (metric, labels, bound), (value, timestamp, trace_id, span_id) in list(self._latest.items())
            if timestamp >= oldest
        }

    def stop(self) -> None:
        """End the flush thread (tests). Recording again does not restart it."""
        self._stop.set()


# Every recorder, so that a forked child can forget its parent's state and thread (os.register_at_fork
# cannot be undone, hence one hook for all and weak references).
_RECORDERS: weakref.WeakSet[ExemplarRecorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_RECORDERS):
        recorder._reset()


os.register_at_fork(after_in_child=_after_fork_in_child)

RECORDER = ExemplarRecorder()


def record(metric: str, labels: Mapping[str, str], value: float, buckets: Sequence[float]) -> None:
    """`ExemplarRecorder.record` on this process's recorder."""
    RECORDER.record(metric, labels, value, buckets)


def exemplar_file(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{FILE_PREFIX}{pid}.json")


def mark_process_dead(pid: int, directory: str | None = None) -> None:
    """Forget a dead process's exemplars (call beside prometheus_client's own `mark_process_dead`)."""
    directory = directory or settings.prometheus_multiproc_dir()
    if directory:
        with contextlib.suppress(FileNotFoundError):
            os.remove(exemplar_file(directory, pid))


def read_exemplars(
    directory: str, *, max_age_s: float = MAX_AGE_S, now: float | None = None
) -> dict[Key, Entry]:
    """The newest exemplar of each key over every process's file, skipping those older than `max_age_s`.

    Files of dead processes count until their exemplars age out (or `mark_process_dead` removes them).
    """
    oldest = (time.time() if now is None else now) - max_age_s
    newest: dict[Key, Entry] = {}
    for path in glob.glob(os.path.join(directory, f"{FILE_PREFIX}*.json")):
        try:
            with open(path, encoding="utf-8") as file:
                rows = json.load(file)
        except (OSError, ValueError):  # removed by mark_process_dead between glob and open
            continue
        for metric, labels, bound, value, timestamp, trace_id, span_id in rows:
            if timestamp < oldest:
                continue
            key = (metric, tuple(sorted(labels.items())), float(bound))
            if key not in newest or newest[key].timestamp < timestamp:
                newest[key] = Entry(value, timestamp, trace_id, span_id)
    return newest


def exemplar_labels(trace_id: str, span_id: str) -> dict[str, str]:
    """`trace_id` (what Grafana's exemplarTraceIdDestinations looks for) and, if it fits, `span_id`."""
    labels = {"trace_id": trace_id, "span_id": span_id}
    if sum(len(name) + len(value) for name, value in labels.items()) > MAX_LABEL_CHARS:
        del labels["span_id"]
    return labels


def attach_exemplars(families: Iterable[Metric], exemplars: Mapping[Key, Entry]) -> Iterator[Metric]:
    """The same metric families, each histogram `_bucket` sample carrying its exemplar if there is one."""
    names = {metric for metric, _, _ in exemplars}
    for family in families:
        if family.type == "histogram" and family.name in names:
            bucket = family.name + "_bucket"
            family.samples = [
                _with_exemplar(family.name, sample, exemplars) if sample.name == bucket else sample
                for sample in family.samples
            ]
        yield family


def _with_exemplar(metric: str, sample: Sample, exemplars: Mapping[Key, Entry]) -> Sample:
    labels = tuple(sorted((name, value) for name, value in sample.labels.items() if name != "le"))
    # Compared as numbers: "0.005", "5e-3" and 0.005 are the same bucket, "+Inf" is inf.
    entry = exemplars.get((metric, labels, float(sample.labels["le"])))
    if entry is None:
        return sample
    return sample._replace(
        exemplar=Exemplar(exemplar_labels(entry.trace_id, entry.span_id), entry.value, entry.timestamp)
    )


class ExemplarCollector:
    """Wraps a collector (a MultiProcessCollector, or a whole CollectorRegistry) and adds exemplars.

    Exemplars come from every process's file in `directory` and from `recorder`'s memory (this process's,
    possibly not yet flushed; the only source when there is no directory). For a key present in both,
    the newest wins. Usable as a registry for `generate_latest` (it has `collect()`), or registered in
    one: `registry.register(ExemplarCollector(MultiProcessCollector(None), directory))`.
    """

    def __init__(
        self,
        inner: _Collector,
        directory: str | None = None,
        recorder: ExemplarRecorder | None = RECORDER,
        *,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self._inner, self._directory, self._recorder, self._max_age_s = inner, directory, recorder, max_age_s

    def collect(self) -> Iterator[Metric]:
        exemplars = read_exemplars(self._directory, max_age_s=self._max_age_s) if self._directory else {}
        if self._recorder is not None:
            for key, entry in self._recorder.entries().items():
                if key not in exemplars or exemplars[key].timestamp < entry.timestamp:
                    exemplars[key] = entry
        return attach_exemplars(self._inner.collect(), exemplars)
