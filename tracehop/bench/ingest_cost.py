"""CPU per span of the trace store's ingest, in one process: OTLP/JSON against OTLP/protobuf.

`python -m tracehop.bench.ingest_cost [--rounds N] [--batch 9] [--profile json|protobuf]` replays the
recorded spans (span_sample.py) as SDK spans, encodes them in batches as the services send them
(tracehop's OTLP/JSON encoder, or the SDK's protobuf encoder), and times with `time.process_time` what
the store does with one export body: decode (otlp.decode_export_batch) and store
(SpanDatabase.insert_groups, into a fresh SQLite file per round). The HTTP handler is not included.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from services.telemetry.otlp_json_encoder import encode_spans_json
from tracehop.bench.span_sample import DEFAULT_SAMPLE, sdk_spans
from tracehop.traces.store.database import SpanDatabase
from tracehop.traces.store.otlp import JSON, PROTOBUF, decode_export_batch

ENCODERS: dict[str, tuple[str, Callable[[list], bytes]]] = {
    "json": (JSON, encode_spans_json),
    "protobuf": (PROTOBUF, lambda spans: encode_spans(spans).SerializeToString()),
}


def bodies(kind: str, batch: int, sample: Path = DEFAULT_SAMPLE) -> tuple[str, list[bytes], int]:
    content_type, encode = ENCODERS[kind]
    spans = sdk_spans(sample)
    # Each process exports its own spans, `batch` at a time (about what a request's trace makes).
    by_process: dict[int, list] = {}
    for span in spans:
        by_process.setdefault(id(span.resource), []).append(span)
    groups = [
        group[start : start + batch] for group in by_process.values() for start in range(0, len(group), batch)
    ]
    return content_type, [encode(group) for group in groups], len(spans)


def ingest(content_type: str, payloads: list[bytes], directory: str, round_name: object) -> float:
    """CPU seconds to decode and store every body into a new database."""
    database = SpanDatabase(Path(directory) / f"round-{round_name}.sqlite3")
    try:
        started = time.process_time()
        for payload in payloads:
            database.insert_groups(decode_export_batch(payload, content_type))
        return time.process_time() - started
    finally:
        database.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=9, help="spans per export request")
    parser.add_argument("--profile", choices=sorted(ENCODERS), help="cProfile one kind instead")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ingest-cost-") as directory:
        if args.profile:
            content_type, payloads, _ = bodies(args.profile, args.batch)
            profiler = cProfile.Profile()
            for round_number in range(args.rounds):
                profiler.enable()
                ingest(content_type, payloads, directory, round_number)
                profiler.disable()
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(25)
            return 0
        # One database file per kind and round. Before, both kinds wrote round-<n>.sqlite3: the protobuf
        # rounds reopened the files the JSON rounds had filled, so every protobuf span was a re-sent copy
        # (SpanDatabase._replace_earlier_copy: a select, deletes, a replace) and protobuf ingest came out
        # dearer than OTLP/JSON's, the reverse of what the store process shows (docs/performance.md). The
        # kinds' rounds are interleaved, so that the machine's load weighs on both alike.
        prepared = {kind: bodies(kind, args.batch) for kind in sorted(ENCODERS)}
        costs: dict[str, list[float]] = {kind: [] for kind in prepared}
        for round_number in range(args.rounds):
            for kind, (content_type, payloads, _) in prepared.items():
                name = f"{kind}-{round_number}"
                costs[kind].append(ingest(content_type, payloads, directory, name))
        for kind, (_, payloads, count) in prepared.items():
            per_span = sorted(cost / count * 1e6 for cost in costs[kind])
            print(
                f"{kind:9} {count} spans in {len(payloads)} requests:"
                f" median {per_span[len(per_span) // 2]:.1f}"
                f" µs/span (min {per_span[0]:.1f}, max {per_span[-1]:.1f})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
