"""Real spans for measuring export in one process: recorded from a running stack, replayed through the SDK.

`python -m tracehop.bench.span_sample capture` starts a private stack in tracehop's traced mode (as
`make bench` runs it), sends the bench's mix (`POST /api/users` and `GET /api/users/<id>`), stops the
stack and writes every stored trace as OTLP/JSON to `bench/export_spans.json`. So the spans carry exactly
the attributes, events, scopes and resources the services make today; recapture when those change.

`sdk_spans()` turns the file back into the SDK's own ended span objects: each recorded span is started
and ended again through a real `TracerProvider` per recorded process (tracehop's resource class with the
recorded attributes, the same scopes, ids, attribute values with their types, events, links and status),
and collected by a span processor as the batch processor would get them. One difference: root spans
carry the W3C trace flags the SDK's tracer gives them (sampled), not the services' (sampled and random).
`tracehop/bench/export_cost.py` measures on them; tests/unit/test_span_sample.py checks the replay.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
    set_span_in_context,
)
from opentelemetry.trace.status import Status, StatusCode

DEFAULT_SAMPLE = Path("bench/export_spans.json")
SERVICES = ("gateway", "users", "worker")


# ---------------------------------------------------------------------------------------------- capture


def capture(output: Path = DEFAULT_SAMPLE, requests_per_kind: int = 30) -> int:
    """Record the bench's mix from a private stack into `output`; returns the number of spans."""
    from tracehop.bench.runner import MODE_ENV, TRACEHOP
    from tracehop.stack.config import free_stack_ports
    from tracehop.stack.runner import LocalStack
    from tracehop.traces.store.api import resource_spans_json
    from tracehop.traces.store.database import SpanDatabase
    from tracehop.traffic import wait_for_job

    env = {**MODE_ENV[TRACEHOP], "GUNICORN_WORKERS": "1", "TRACEHOP_MAIL_LATENCY_MS": "1"}
    with tempfile.TemporaryDirectory(prefix="span-sample-") as root:
        stack = LocalStack(Path(root, "var"), Path(root, "logs"), free_stack_ports(), env, prometheus=False)
        stack.start(timeout=120)
        try:
            http = requests.Session()
            http.trust_env = False
            gateway = stack.urls["gateway"]
            jobs = []
            for index in range(requests_per_kind):
                body = {"name": "Bench User", "email": f"sample-{index}-{random.getrandbits(32)}@example.org"}
                created = http.post(f"{gateway}/api/users", json=body, timeout=15)
                created.raise_for_status()
                jobs.append(created.json()["job_id"])
                http.get(f"{gateway}/api/users/{created.json()['user']['id']}", timeout=15).raise_for_status()
            for job in jobs:
                wait_for_job(http, gateway, job)
            time.sleep(2.5)  # the batch processors' delay (1 s) and more
        finally:
            stack.stop()
        database = SpanDatabase(stack.layout.traces_db)
        try:
            trace_ids = [row[0] for row in database._connection.execute("SELECT trace_id FROM traces")]
            traces = database.traces(trace_ids)
            documents = [{"resourceSpans": resource_spans_json(database, spans)} for spans in traces.values()]
            # Polling for the jobs' outcome is the capture's own traffic, not the bench's mix.
            documents = [
                doc for doc in documents if not any(_is_job_poll(span) for *_, span in document_spans(doc))
            ]
        finally:
            database.close()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(documents, indent=None, separators=(",", ":")) + "\n")
    return sum(len(document_spans(document)) for document in documents)


def _is_job_poll(span: dict[str, Any]) -> bool:
    return span["name"].startswith("GET /api/jobs/")


def document_spans(document: dict[str, Any]) -> list[tuple[dict, dict, dict]]:
    """(resource, scope, span) of every span in one OTLP/JSON document."""
    return [
        (resource_spans.get("resource", {}), scope_spans.get("scope", {}), span)
        for resource_spans in document["resourceSpans"]
        for scope_spans in resource_spans.get("scopeSpans", [])
        for span in scope_spans.get("spans", [])
    ]


# ---------------------------------------------------------------------------------------------- replay


def decode_value(value: dict[str, Any]) -> Any:
    """An OTLP/JSON AnyValue as the Python value an instrumentation would have set."""
    if "stringValue" in value:
        return value["stringValue"]
    if "boolValue" in value:
        return value["boolValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    if "arrayValue" in value:
        return tuple(decode_value(item) for item in value["arrayValue"].get("values", []))
    if "kvlistValue" in value:
        return {item["key"]: decode_value(item["value"]) for item in value["kvlistValue"].get("values", [])}
    return None


def decode_attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {item["key"]: decode_value(item.get("value", {})) for item in items or []}


def _context(
    trace_id: str, span_id: str, flags: int = 1, remote: bool = False, state: str = ""
) -> SpanContext:
    members = [tuple(member.split("=", 1)) for member in state.split(",") if "=" in member]
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), remote, TraceFlags(flags & 0xFF), TraceState(members)
    )


class _ReplayIds(IdGenerator):
    """Gives the recorded ids back, so the replayed spans carry the ids the services made."""

    def __init__(self) -> None:
        self.trace_id = self.span_id = 0

    def generate_trace_id(self) -> int:
        return self.trace_id

    def generate_span_id(self) -> int:
        return self.span_id


class _Collect(SpanProcessor):
    def __init__(self, into: list[ReadableSpan]) -> None:
        self.into = into

    def on_end(self, span: ReadableSpan) -> None:
        self.into.append(span)


def sdk_spans(path: Path = DEFAULT_SAMPLE) -> list[ReadableSpan]:
    """Every recorded span as an ended SDK span, in recorded order (see the module docstring)."""
    from services.telemetry.setup import HashCachedResource  # tracehop's resource class, as shipped

    documents = json.loads(path.read_text())
    ended: list[ReadableSpan] = []
    # One provider per recorded resource: a process (a gunicorn worker, a Celery pool child) of a service.
    providers: dict[str, tuple[TracerProvider, _ReplayIds]] = {}
    for document in documents:
        for resource, scope, span in document_spans(document):
            process = json.dumps(resource.get("attributes", []), sort_keys=True)
            if process not in providers:
                ids = _ReplayIds()
                attributes = decode_attributes(resource.get("attributes"))
                provider = TracerProvider(resource=HashCachedResource(attributes), id_generator=ids)
                provider.add_span_processor(_Collect(ended))
                providers[process] = provider, ids
            provider, ids = providers[process]
            _replay(provider, ids, scope, span)
    return ended


def _replay(provider: TracerProvider, ids: _ReplayIds, scope: dict[str, Any], span: dict[str, Any]) -> None:
    tracer = provider.get_tracer(
        scope.get("name", ""),
        scope.get("version") or None,
        attributes=decode_attributes(scope.get("attributes")),
    )
    flags = span.get("flags", 0x101)
    ids.trace_id, ids.span_id = int(span["traceId"], 16), int(span["spanId"], 16)
    parent = None
    if span.get("parentSpanId"):
        parent_context = _context(span["traceId"], span["parentSpanId"], flags, bool(flags & 0x200))
        parent = set_span_in_context(NonRecordingSpan(parent_context))
    links = [
        Link(
            _context(link["traceId"], link["spanId"], link.get("flags", 1), state=link.get("traceState", "")),
            decode_attributes(link.get("attributes")),
        )
        for link in span.get("links", [])
    ]
    recorded = tracer.start_span(
        span["name"],
        context=parent,
        kind=SpanKind(span.get("kind", 1) - 1),
        attributes=decode_attributes(span.get("attributes")),
        links=links,
        start_time=int(span["startTimeUnixNano"]),
    )
    for event in span.get("events", []):
        recorded.add_event(
            event["name"], decode_attributes(event.get("attributes")), int(event["timeUnixNano"])
        )
    status = span.get("status", {})
    if status.get("code"):
        recorded.set_status(Status(StatusCode(status["code"]), status.get("message")))
    recorded.end(int(span["endTimeUnixNano"]))


def batches(spans: list[ReadableSpan], size: int) -> Iterator[list[ReadableSpan]]:
    """A batch of `size` spans per recorded process, cycling through its spans: what one process's
    batch processor hands its exporter under load."""
    by_process: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        by_process.setdefault(id(span.resource), []).append(span)
    for process_spans in by_process.values():
        yield (process_spans * (size // len(process_spans) + 1))[:size]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracehop.bench.span_sample", description=__doc__)
    parser.add_argument("command", choices=["capture", "show"])
    parser.add_argument("--output", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--requests", type=int, default=30, help="POSTs (and as many GETs) to record")
    args = parser.parse_args(argv)
    if args.command == "capture":
        count = capture(args.output, args.requests)
        print(f"{count} spans written to {args.output}")
    else:
        for span in sdk_spans(args.output)[:12]:
            print(span.resource.attributes["service.name"], span.kind.name, span.name, len(span.attributes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
