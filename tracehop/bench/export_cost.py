"""What exporting a span costs, measured in one process: `python -m tracehop.bench.export_cost`.

`make bench` measures what tracing costs the whole flow; this measures only the part from `span.end()`
onwards, on the spans the services really make (tracehop/bench/span_sample.py replays them through the
SDK), so that a change to the batch processor or the exporter can be judged in seconds, on a busy machine:

- **encode**: the OTLP request body for batches of one service's spans, our OTLP/JSON encoder against the
  SDK's protobuf one (`encode_spans(...).SerializePartialToString()`, what `http/protobuf` sends);
- **export**: `exporter.export(batch)` with the real HTTP POST to a trace store running in another process
  (its CPU is not counted), for each protocol: encoding + POST;
- **pipeline**: spans ended one by one into tracehop's batch processor (`DropReportingBatchSpanProcessor`
  over the retrying and counting exporters, as setup.py builds it) until it has exported them all: the
  request thread's share (`on_end`) and the whole process's.

Every figure is CPU time (`time.process_time`, `time.thread_time`), not wall clock, as microseconds per
span: the median over `--rounds` rounds, with the range. `--baseline REF` measures the encoder of a git
revision side by side in the same rounds, for a before/after that the machine's load cannot skew
(revisions before 9228d17 serialise with orjson, which tracehop no longer installs: `uv pip install orjson`).
`--only encode --callgrind` prints a workload for `valgrind --tool=callgrind` (instruction counts do not
depend on the load at all): see docs/performance.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from services.metrics.span_export_metrics import CountingSpanExporter
from services.telemetry.export_retry import DropReportingBatchSpanProcessor, RetryingSpanExporter
from services.telemetry.otlp_json_encoder import encode_spans_json
from services.telemetry.otlp_json_exporter import PAUSE_EVERY_SPANS, OTLPJsonSpanExporter, let_requests_run
from tracehop.bench.span_sample import DEFAULT_SAMPLE, batches, sdk_spans

Batch = list[ReadableSpan]


# ------------------------------------------------------------------------------------------- measuring


def cpu_us_per_span(work: Callable[[Batch], object], work_batches: Sequence[Batch], repeat: int) -> float:
    """Process CPU per span for `repeat` passes of `work` over every batch."""
    spans = sum(len(batch) for batch in work_batches) * repeat
    started = time.process_time()
    for _ in range(repeat):
        for batch in work_batches:
            work(batch)
    return (time.process_time() - started) / spans * 1e6


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(samples), 2),
        "min": round(min(samples), 2),
        "max": round(max(samples), 2),
    }


def encoder_of_revision(ref: str) -> Callable[[Batch], bytes]:
    """`encode_spans_json` as it was at git revision `ref` (loaded from `git show`, not installed)."""
    for path in ("services/telemetry/otlp_json_encoder.py", "services/telemetry/otlp_json_exporter.py"):
        shown = subprocess.run(["git", "show", f"{ref}:{path}"], capture_output=True, text=True)
        if shown.returncode == 0:  # the encoder has its own module since it writes text
            source = shown.stdout
            break
    else:
        raise ValueError(f"no OTLP/JSON encoder at {ref}")
    path = Path(tempfile.mkdtemp(prefix="export-cost-")) / f"baseline_{abs(hash(ref))}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.encode_spans_json


def sdk_protobuf(batch: Batch) -> bytes:
    return encode_spans(batch).SerializePartialToString()


# ------------------------------------------------------------------------------------------ the store


class TraceStoreProcess:
    """tracehop's trace store in a process of its own (its CPU is not ours), on free ports."""

    def __init__(self, directory: Path) -> None:
        ports = [_free_port(), _free_port()]
        self.traces_url = f"http://127.0.0.1:{ports[0]}/v1/traces"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tracehop", "trace-store", "--otlp-port", str(ports[0])]
            + ["--query-port", str(ports[1]), "--db", str(directory / "traces.db")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()  # "trace store: OTLP/HTTP on ..." once it listens
        if "OTLP/HTTP on" not in line:
            raise RuntimeError(f"the trace store did not start: {line}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post_cost(exporters: dict[str, Any], batch: Batch, rounds: int) -> dict[str, dict[str, float]]:
    """CPU ms per POST of an already encoded body (16 spans, and the whole batch) by each exporter's
    HTTP client, with its retries and compression settings: what a batch costs besides encoding."""
    samples: dict[str, list[float]] = {}
    for spans in (batch[:16], batch):
        body = encode_spans_json(spans)
        for name, exporter in exporters.items():
            if not name.startswith("json"):
                continue
            label = f"{name}, {len(spans)} spans"
            posts = 40 if len(spans) <= 16 else 10
            for _ in range(rounds):
                started = time.process_time()
                for _ in range(posts):
                    exporter._client.export(body)
                samples.setdefault(label, []).append((time.process_time() - started) / posts * 1e3)
    return {label: summary(values) for label, values in samples.items()}


# ------------------------------------------------------------------------- the hold on the interpreter


def hold_stretches_ms(work_batches: Sequence[Batch], pause_every: int | None) -> list[float]:
    """Each stretch of encoding CPU between two chances for another thread to run (ms): the whole
    batch without pauses, else each slice between the exporter's pauses."""
    stretches: list[float] = []
    mark = [time.thread_time()]

    def pause() -> None:
        now = time.thread_time()
        stretches.append(now - mark[0])
        mark[0] = now
        let_requests_run()

    for batch in work_batches:
        mark[0] = time.thread_time()
        if pause_every is None:
            encode_spans_json(batch)
        else:
            encode_spans_json(batch, pause=pause, pause_every=pause_every)
        stretches.append(time.thread_time() - mark[0])
    return [stretch * 1e3 for stretch in stretches]


def request_delays_ms(work_batches: Sequence[Batch], pause_every: int | None, samples: int) -> list[float]:
    """WALL CLOCK, the worst case: while another thread encodes batch after batch, how late a thread
    that slept 1 ms gets to finish a small unit of work (a request's share of the interpreter)."""
    stop = threading.Event()

    def export_continuously() -> None:
        while not stop.is_set():
            for batch in work_batches:
                if pause_every is None:
                    encode_spans_json(batch)
                else:
                    encode_spans_json(batch, pause=let_requests_run, pause_every=pause_every)

    exporter = threading.Thread(target=export_continuously, daemon=True)
    exporter.start()
    delays = []
    for _ in range(samples):
        started = time.perf_counter()
        time.sleep(0.001)
        sum(range(3000))  # ~0.05 ms of interpreter work
        delays.append((time.perf_counter() - started - 0.001) * 1e3)
    stop.set()
    exporter.join()
    return sorted(delays)


def measure_hold(work_batches: Sequence[Batch], rounds: int) -> dict[str, Any]:
    variants = {"whole batch": None, f"pause every {PAUSE_EVERY_SPANS} spans": PAUSE_EVERY_SPANS}
    holds: dict[str, list[float]] = {name: [] for name in variants}
    longest: dict[str, list[float]] = {name: [] for name in variants}
    p50: dict[str, list[float]] = {name: [] for name in variants}
    p99: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, every in variants.items():
            stretches = hold_stretches_ms(work_batches, every)
            holds[name].append(statistics.median(stretches))
            longest[name].append(max(stretches))
            delays = request_delays_ms(work_batches, every, 300)
            p50[name].append(delays[len(delays) // 2])
            p99[name].append(delays[int(len(delays) * 0.99)])
    return {
        name: {
            "hold_cpu_ms_median": summary(holds[name]),
            "hold_cpu_ms_longest": summary(longest[name]),
            "request_delay_p50_wall_ms": summary(p50[name]),
            "request_delay_p99_wall_ms": summary(p99[name]),
        }
        for name in variants
    }


# ------------------------------------------------------------------------------------------- pipeline


class _Done(SpanExporter):
    """Counts what reached the end of the pipeline, so the measurement knows when all is exported."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.exported = 0
        self.all_in = threading.Event()
        self.expected = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self.inner.export(spans)
        self.exported += len(spans)
        if self.exported >= self.expected:
            self.all_in.set()
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()


def pipeline_round(exporter: SpanExporter, spans: Batch, repeat: int) -> tuple[float, float]:
    """(request thread's CPU per span in on_end, whole process's CPU per span) for `repeat` passes of
    `spans` through tracehop's batch processor with a 1 s delay, as the stack runs it."""
    done = _Done(exporter)
    done.expected = len(spans) * repeat
    processor = DropReportingBatchSpanProcessor(
        CountingSpanExporter(RetryingSpanExporter(done, budget_s=0)),
        max_queue_size=len(spans) * repeat,
        schedule_delay_millis=1000,
    )
    process_started, thread_started = time.process_time(), time.thread_time()
    for _ in range(repeat):
        for span in spans:
            processor.on_end(span)
    thread_cpu = time.thread_time() - thread_started
    done.all_in.wait(120)
    process_cpu = time.process_time() - process_started
    processor._batch_processor._shutdown = True  # stop the worker without exporting again
    processor._batch_processor._worker_awaken.set()
    count = len(spans) * repeat
    return thread_cpu / count * 1e6, process_cpu / count * 1e6


# ----------------------------------------------------------------------------------------------- main


def measure(args: argparse.Namespace) -> dict[str, Any]:
    spans = sdk_spans(args.sample)
    work_batches = list(batches(spans, args.batch_size))
    results: dict[str, Any] = {
        "spans_in_sample": len(spans),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
    }
    if "encode" in args.only:
        encoders: dict[str, Callable[[Batch], bytes]] = {"json": encode_spans_json, "protobuf": sdk_protobuf}
        if args.baseline:
            encoders[f"json@{args.baseline}"] = encoder_of_revision(args.baseline)
        samples: dict[str, list[float]] = {name: [] for name in encoders}
        for encoder in encoders.values():  # warm-up: imports, caches
            encoder(work_batches[0])
        for _ in range(args.rounds):
            for name, encoder in encoders.items():
                samples[name].append(cpu_us_per_span(encoder, work_batches, args.repeat))
        results["encode_us_per_span"] = {name: summary(values) for name, values in samples.items()}
        first = work_batches[0]
        results["bytes_per_span"] = {
            name: round(len(encoder(first)) / len(first)) for name, encoder in encoders.items()
        }
    if "hold" in args.only:
        results["hold"] = measure_hold(work_batches, args.rounds)
    if {"export", "pipeline"} & set(args.only):
        with tempfile.TemporaryDirectory(prefix="export-cost-") as directory:
            store = TraceStoreProcess(Path(directory))
            try:
                exporters = {
                    "json": OTLPJsonSpanExporter(endpoint=store.traces_url, timeout=10),
                    "json, POST by requests": OTLPJsonSpanExporter(
                        endpoint=store.traces_url, timeout=10, _transport=RequestsHTTPTransport()
                    ),
                    "protobuf": OTLPSpanExporter(endpoint=store.traces_url, timeout=10),
                }
                if "export" in args.only:
                    export_samples: dict[str, list[float]] = {name: [] for name in exporters}
                    for exporter in exporters.values():
                        exporter.export(work_batches[0])  # the connection, warm
                    for _ in range(args.rounds):
                        for name, exporter in exporters.items():
                            export_samples[name].append(
                                cpu_us_per_span(exporter.export, work_batches, max(1, args.repeat // 4))
                            )
                    results["export_us_per_span"] = {k: summary(v) for k, v in export_samples.items()}
                    results["post_ms"] = post_cost(exporters, work_batches[0], args.rounds)
                if "pipeline" in args.only:
                    on_end, whole = [], []
                    passes = max(1, args.repeat // 4)
                    for _ in range(args.rounds):
                        thread_us, process_us = pipeline_round(exporters["json"], spans, passes)
                        on_end.append(thread_us)
                        whole.append(process_us)
                    results["pipeline_us_per_span"] = {
                        "on_end (request thread)": summary(on_end),
                        "whole process (json)": summary(whole),
                    }
            finally:
                store.stop()
    return results


def print_results(results: dict[str, Any]) -> None:
    print(
        f"{results['spans_in_sample']} recorded spans, batches of {results['batch_size']}, "
        f"{results['rounds']} rounds, load average {results['load_average'][0]:.1f}"
    )
    for section in ("encode_us_per_span", "export_us_per_span", "pipeline_us_per_span"):
        for name, figures in results.get(section, {}).items():
            print(
                f"  {section.removesuffix('_us_per_span'):<9} {name:<34} {figures['median']:7.2f} µs/span"
                f"  ({figures['min']:.2f}–{figures['max']:.2f})"
            )
    for name, figures in results.get("post_ms", {}).items():
        spread = f"({figures['min']:.2f}–{figures['max']:.2f})"
        print(f"  POST      {name:<34} {figures['median']:5.2f} ms/POST  {spread}")
    for name, figures in results.get("hold", {}).items():
        for figure, values in figures.items():
            spread = f"({values['min']:.2f}–{values['max']:.2f})"
            print(f"  hold      {name:<22} {figure:<26} {values['median']:6.2f} ms  {spread}")
    for name, size in results.get("bytes_per_span", {}).items():
        print(f"  size      {name:<34} {size:7d} bytes/span")


def callgrind_workload(args: argparse.Namespace) -> None:
    """Encode `--repeat` passes over the batches with one encoder (`--encoder`); run it twice under
    callgrind with different `--repeat` and divide the difference in instructions by the spans."""
    spans = sdk_spans(args.sample)
    work_batches = list(batches(spans, args.batch_size))
    encoder = {"json": encode_spans_json, "protobuf": sdk_protobuf}.get(args.encoder) or encoder_of_revision(
        args.encoder.removeprefix("json@")
    )
    encoder(work_batches[0])
    for _ in range(args.repeat):
        for batch in work_batches:
            encoder(batch)
    print(sum(len(batch) for batch in work_batches) * args.repeat, "spans encoded")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracehop.bench.export_cost", description=__doc__)
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--batch-size", type=int, default=512, help="spans per batch (the SDK's default)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=8, help="passes over the batches per round")
    parser.add_argument("--only", nargs="+", default=["encode", "export", "pipeline", "hold"])
    parser.add_argument("--baseline", help="also measure the JSON encoder of this git revision")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--callgrind", action="store_true", help="only run the encoding workload")
    parser.add_argument("--encoder", default="json", help="with --callgrind: json, protobuf or json@REF")
    args = parser.parse_args(argv)
    if args.callgrind:
        callgrind_workload(args)
        return 0
    results = measure(args)
    print_results(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
