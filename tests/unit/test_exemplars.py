"""Exemplars across processes: recorded in (forked) processes, read back through a MultiProcessCollector."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import CollectorRegistry, Histogram, generate_latest, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from services.metrics.exemplars import (
    MAX_LABEL_CHARS,
    ExemplarCollector,
    ExemplarRecorder,
    exemplar_file,
    exemplar_labels,
    mark_process_dead,
    read_exemplars,
)
from tests.required_tools import skip_or_fail
from tests.waiting import eventually
from tracehop.stack.config import free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forks processes")

METRIC = "job_seconds"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
TRACE_A = 0x4BF92F3577B34DA6A3CE929D0E0E4736
TRACE_B = 0x0AF7651916CD43DD8448EB211C80319C
SPAN = 0x00F067AA0BA902B7


def hex_id(trace_id: int) -> str:
    return trace.format_trace_id(trace_id)


@contextmanager
def in_span(trace_id: int, sampled: bool = True) -> Iterator[None]:
    """The current span is one of `trace_id`: what a request or a job would be running in."""
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    context = SpanContext(trace_id=trace_id, span_id=SPAN, is_remote=False, trace_flags=flags)
    with trace.use_span(NonRecordingSpan(context)):
        yield


def observe_and_record(
    directory: str, recorder: ExemplarRecorder, observations: list[tuple[str, float, int]]
) -> None:
    """Body of a forked process: what a gunicorn worker or a prefork child does for each observation."""
    # prometheus_client picks in-memory values at import time (PROMETHEUS_MULTIPROC_DIR was unset): this
    # process switches to the mmap files a worker of a multiprocess service would write from the start.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    values.ValueClass = values.MultiProcessValue()
    histogram = Histogram(METRIC, "Job duration.", ["task"], buckets=BUCKETS, registry=None)
    for task, value, trace_id in observations:
        with in_span(trace_id):
            histogram.labels(task).observe(value)
            recorder.record(METRIC, {"task": task}, value, BUCKETS)
    # The flush thread, not this function, writes the file: wait for it as the process would live on.
    try:
        eventually(lambda: os.path.exists(exemplar_file(directory, os.getpid())), 5, "the exemplar file")
    except AssertionError:
        os._exit(3)
    os._exit(0)


def run_process(
    directory: Path, recorder: ExemplarRecorder, observations: list[tuple[str, float, int]]
) -> int:
    process = multiprocessing.get_context("fork").Process(
        target=observe_and_record, args=(str(directory), recorder, observations)
    )
    process.start()
    process.join(timeout=20)
    assert process.exitcode == 0, "the forked process never flushed its exemplars"
    return process.pid


def render(directory: Path, recorder: ExemplarRecorder | None = None) -> str:
    """/metrics of the process serving them, in the OpenMetrics format (what Prometheus asks for)."""
    registry = CollectorRegistry()
    registry.register(
        ExemplarCollector(MultiProcessCollector(None, path=str(directory)), str(directory), recorder)
    )
    return openmetrics.generate_latest(registry).decode()


def exemplar_on(text: str, series: str) -> str | None:
    """The trace id of the exemplar on the line of `series` (name and labels as rendered), or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            found = re.search(r' # \{.*trace_id="([0-9a-f]{32})".*\} ', line)
            return found.group(1) if found else None
    raise AssertionError(f"no line for {series} in:\n{text}")


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[ExemplarRecorder]:
    recorder = ExemplarRecorder(str(tmp_path), flush_interval_s=0.02)
    yield recorder
    recorder.stop()


def test_exemplars_of_two_processes_land_on_their_buckets(tmp_path, recorder):
    run_process(tmp_path, recorder, [("send", 0.03, TRACE_A), ("report", 7.0, TRACE_A)])
    run_process(tmp_path, recorder, [("send", 0.2, TRACE_B), ("report", 0.005, TRACE_B)])

    text = render(tmp_path)
    # Counts are still summed over both processes; each bucket gets the exemplar that fell into it.
    assert exemplar_on(text, 'job_seconds_bucket{le="0.05",task="send"}') == hex_id(TRACE_A)
    assert exemplar_on(text, 'job_seconds_bucket{le="0.25",task="send"}') == hex_id(TRACE_B)
    assert exemplar_on(text, 'job_seconds_bucket{le="0.1",task="send"}') is None
    assert exemplar_on(text, 'job_seconds_bucket{le="+Inf",task="report"}') == hex_id(TRACE_A)
    # Buckets are inclusive: 0.005 belongs to le="0.005".
    assert exemplar_on(text, 'job_seconds_bucket{le="0.005",task="report"}') == hex_id(TRACE_B)
    line = next(
        line for line in text.splitlines() if line.startswith('job_seconds_bucket{le="0.25",task="send"}')
    )
    assert re.fullmatch(
        rf'job_seconds_bucket\{{le="0.25",task="send"\}} 2.0 # '
        rf'\{{span_id="00f067aa0ba902b7",trace_id="{hex_id(TRACE_B)}"\}} 0.2 \d+\.\d+',
        line,
    ), line
    # And a parser agrees: prometheus_client's own OpenMetrics parser.
    families = {family.name: family for family in text_string_to_metric_families(text)}
    exemplars = [sample.exemplar for sample in families[METRIC].samples if sample.exemplar]
    assert {exemplar.labels["trace_id"] for exemplar in exemplars} == {hex_id(TRACE_A), hex_id(TRACE_B)}


def test_the_newest_exemplar_of_a_bucket_wins_across_processes(tmp_path):
    # Each file holds the newer exemplar of one bucket: whichever order the files are read in, taking
    # the first or the last file's would get one bucket wrong.
    now = time.time()
    rows = {
        101: [[METRIC, {"task": "send"}, "0.05", 0.03, now - 1, hex_id(TRACE_A), "1" * 16],
              [METRIC, {"task": "send"}, "+Inf", 9.0, now - 9, hex_id(TRACE_A), "1" * 16]],
        102: [[METRIC, {"task": "send"}, "0.05", 0.04, now - 9, hex_id(TRACE_B), "2" * 16],
              [METRIC, {"task": "send"}, "+Inf", 8.0, now - 1, hex_id(TRACE_B), "2" * 16]],
    }  # fmt: skip
    for pid, content in rows.items():
        Path(exemplar_file(str(tmp_path), pid)).write_text(json.dumps(content))

    newest = read_exemplars(str(tmp_path))

    assert newest[(METRIC, (("task", "send"),), 0.05)].trace_id == hex_id(TRACE_A)
    assert newest[(METRIC, (("task", "send"),), float("inf"))].trace_id == hex_id(TRACE_B)


def test_a_forked_child_writes_its_own_file_not_its_parents(tmp_path, recorder):
    with in_span(TRACE_A):
        recorder.record(METRIC, {"task": "send"}, 0.03, BUCKETS)  # starts the parent's flush thread
    eventually(lambda: os.path.exists(exemplar_file(str(tmp_path), os.getpid())), 5, "the exemplar file")

    child = run_process(tmp_path, recorder, [("send", 0.2, TRACE_B)])

    assert {path.name for path in tmp_path.glob("exemplars_*.json")} == {
        f"exemplars_{os.getpid()}.json",
        f"exemplars_{child}.json",
    }
    child_file = Path(exemplar_file(str(tmp_path), child)).read_text()
    assert hex_id(TRACE_B) in child_file and hex_id(TRACE_A) not in child_file


def test_nothing_is_recorded_outside_a_sampled_span(tmp_path, recorder):
    recorder.record(METRIC, {"task": "send"}, 0.03, BUCKETS)
    with in_span(TRACE_A, sampled=False):
        recorder.record(METRIC, {"task": "send"}, 0.03, BUCKETS)
    assert recorder.entries() == {}
    assert recorder.flush() is False
    assert list(tmp_path.iterdir()) == []


def test_the_file_is_written_only_when_something_changed(tmp_path):
    recorder = ExemplarRecorder(str(tmp_path), flush_interval_s=3600)  # flushed by hand here
    try:
        with in_span(TRACE_A):
            recorder.record(METRIC, {"task": "send"}, 0.03, BUCKETS)
        assert recorder.flush() is True
        assert recorder.flush() is False
        with in_span(TRACE_B):
            recorder.record(METRIC, {"task": "send"}, 0.04, BUCKETS)
        assert recorder.flush() is True
        assert [path.name for path in tmp_path.iterdir()] == [f"exemplars_{os.getpid()}.json"]  # no temp file
    finally:
        recorder.stop()


def test_old_exemplars_age_out(tmp_path):
    now = [1_000_000.0]
    recorder = ExemplarRecorder(str(tmp_path), flush_interval_s=3600, max_age_s=600, clock=lambda: now[0])
    try:
        with in_span(TRACE_A):
            recorder.record(METRIC, {"task": "send"}, 0.03, BUCKETS)
        now[0] += 300
        with in_span(TRACE_B):
            recorder.record(METRIC, {"task": "report"}, 0.03, BUCKETS)
        recorder.flush()
        assert {entry.trace_id for entry in read_exemplars(str(tmp_path), now=now[0]).values()} == {
            hex_id(TRACE_A),
            hex_id(TRACE_B),
        }

        now[0] += 301  # TRACE_A's exemplar is now 601 s old, TRACE_B's 301 s
        # In the file of a process that stopped recording (or died): skipped when read...
        assert [entry.trace_id for entry in read_exemplars(str(tmp_path), now=now[0]).values()] == [
            hex_id(TRACE_B)
        ]
        # ...and forgotten by the recorder itself.
        assert [entry.trace_id for entry in recorder.entries().values()] == [hex_id(TRACE_B)]
        recorder.flush()
        assert len(recorder._latest) == 1
    finally:
        recorder.stop()


def test_a_dead_process_file_is_removed(tmp_path, recorder):
    child = run_process(tmp_path, recorder, [("send", 0.03, TRACE_A)])
    assert exemplar_on(render(tmp_path), 'job_seconds_bucket{le="0.05",task="send"}') == hex_id(TRACE_A)

    mark_process_dead(child, str(tmp_path))
    mark_process_dead(child, str(tmp_path))  # twice (or a process that never recorded): no error

    assert not os.path.exists(exemplar_file(str(tmp_path), child))
    assert exemplar_on(render(tmp_path), 'job_seconds_bucket{le="0.05",task="send"}') is None


@pytest.mark.parametrize("hook", ["gunicorn child_exit", "worker child shutdown"])
def test_the_services_remove_a_dead_process_file(tmp_path, monkeypatch, hook):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    dead = Path(exemplar_file(str(tmp_path), 4242))
    dead.write_text("[]")
    if hook == "gunicorn child_exit":
        from services.web import gunicorn_conf

        gunicorn_conf.child_exit(None, type("Worker", (), {"pid": 4242}))
    else:
        from services.metrics import multiprocess  # what the worker's child-shutdown hook calls

        multiprocess.mark_process_dead(4242)
    assert not dead.exists()


def test_the_plain_text_format_still_renders_without_exemplars(tmp_path, recorder):
    run_process(tmp_path, recorder, [("send", 0.03, TRACE_A)])
    registry = CollectorRegistry()
    registry.register(ExemplarCollector(MultiProcessCollector(None, path=str(tmp_path)), str(tmp_path), None))

    text = generate_latest(registry).decode()

    assert 'job_seconds_bucket{le="0.05",task="send"} 1.0\n' in text
    assert "trace_id" not in text
    # What a scraper that asks for nothing in particular gets:
    encode, content_type = choose_encoder("*/*")
    assert content_type.startswith("text/plain") and "trace_id" not in encode(registry).decode()


def test_without_a_multiprocess_directory_exemplars_stay_in_memory(tmp_path, monkeypatch):
    # A single process (unit tests, `flask run`): no file, the collector reads the recorder itself.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    recorder = ExemplarRecorder()
    registry = CollectorRegistry()
    histogram = Histogram(METRIC, "Job duration.", ["task"], buckets=BUCKETS, registry=registry)
    with in_span(TRACE_A):
        histogram.labels("send").observe(0.03)
        recorder.record(METRIC, {"task": "send"}, 0.03, BUCKETS)

    text = openmetrics.generate_latest(ExemplarCollector(registry, recorder=recorder)).decode()

    assert exemplar_on(text, 'job_seconds_bucket{le="0.05",task="send"}') == hex_id(TRACE_A)
    assert list(tmp_path.iterdir()) == []  # nowhere to write: not even the working directory


def test_exemplar_labels_respect_the_openmetrics_limit():
    labels = exemplar_labels(hex_id(TRACE_A), trace.format_span_id(SPAN))
    assert labels == {"trace_id": hex_id(TRACE_A), "span_id": "00f067aa0ba902b7"}
    assert sum(len(name) + len(value) for name, value in labels.items()) <= MAX_LABEL_CHARS
    # Should ids ever grow, the trace id (what Grafana links with) is kept and the span id dropped.
    assert exemplar_labels("a" * 100, "b" * 16) == {"trace_id": "a" * 100}


# --- a real Prometheus scrapes the output and stores the exemplars -------------------------------------


def prometheus_binary() -> str:
    binary = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if os.path.exists("/usr/bin/prometheus") else None
    )
    if binary is None:
        skip_or_fail(
            "prometheus", "no `prometheus` binary (apt-get install --no-install-recommends prometheus)"
        )
    return binary


@contextmanager
def serve_metrics(collector: ExemplarCollector) -> Iterator[tuple[int, list[str]]]:
    """/metrics on a free port, negotiated as the services do (choose_encoder); yields (port, Accepts)."""
    accepted: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            accepted.append(self.headers.get("Accept", ""))
            encode, content_type = choose_encoder(self.headers.get("Accept", ""))
            body = encode(collector)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], accepted
    finally:
        server.shutdown()
        server.server_close()


def test_prometheus_stores_the_exemplars(tmp_path, tmp_path_factory, recorder):
    binary = prometheus_binary()
    run_process(tmp_path, recorder, [("send", 0.2, TRACE_A), ("send", 0.004, TRACE_B)])
    collector = ExemplarCollector(MultiProcessCollector(None, path=str(tmp_path)), str(tmp_path), None)
    prometheus_dir = tmp_path_factory.mktemp("prometheus")

    with serve_metrics(collector) as (metrics_port, accepted):
        config = prometheus_dir / "prometheus.yml"
        target = f"127.0.0.1:{metrics_port}"
        config.write_text(
            "global: {scrape_interval: 1s}\n"
            f"scrape_configs: [{{job_name: exemplars, static_configs: [{{targets: ['{target}']}}]}}]\n"
        )
        port = free_port()
        prometheus = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={prometheus_dir / 'data'}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            found: dict[str, str] = {}

            def stored() -> bool:
                now = time.time()
                try:
                    response = requests.get(
                        f"http://127.0.0.1:{port}/api/v1/query_exemplars",
                        params={"query": "job_seconds_bucket", "start": now - 300, "end": now + 60},
                        timeout=2,
                    )
                except requests.ConnectionError:  # not listening yet
                    return False
                if response.status_code != 200:  # 503 while the storage is still starting
                    return False
                for series in response.json().get("data") or []:
                    for exemplar in series["exemplars"]:
                        found[series["seriesLabels"]["le"]] = exemplar["labels"]["trace_id"]
                return len(found) == 2

            try:
                ok = eventually(stored, 15, "the exemplars stored by Prometheus")
            except AssertionError:
                ok = False
        finally:
            prometheus.terminate()
            _, errors = prometheus.communicate(timeout=10)
        assert ok, f"no exemplars stored; found {found}; Prometheus said:\n{errors.decode()[-3000:]}"
        assert found == {"0.25": hex_id(TRACE_A), "0.005": hex_id(TRACE_B)}
        # Prometheus asked for OpenMetrics, the only format that carries exemplars.
        assert accepted and accepted[0].startswith("application/openmetrics-text")
