"""The spans `make export-cost` measures on are the ones the services made: the recorded OTLP/JSON
(bench/export_spans.json), replayed through the SDK and encoded again, gives back what was recorded."""

from __future__ import annotations

import json

from services.telemetry.otlp_json_encoder import encode_spans_json
from tracehop.bench.span_sample import DEFAULT_SAMPLE, batches, document_spans, sdk_spans

RANDOM_TRACE_FLAG = 0x02  # set by the services on root spans; the replay's SDK tracer sets only "sampled"


def by_span_id(documents: list[dict]) -> dict[str, tuple[dict, dict, dict]]:
    found = {}
    for document in documents:
        for resource, scope, span in document_spans(document):
            span = {**span, "flags": span.get("flags", 0) & ~RANDOM_TRACE_FLAG}
            found[span["spanId"]] = (resource, scope, span)
    return found


def test_the_replay_gives_back_every_recorded_span() -> None:
    recorded = by_span_id(json.loads(DEFAULT_SAMPLE.read_text()))
    replayed = sdk_spans()
    encoded = by_span_id([json.loads(encode_spans_json(replayed))])
    assert len(recorded) == len(replayed) > 500
    assert encoded == recorded  # resource, scope and every field of every span


def test_a_batch_holds_one_process_spans() -> None:
    spans = sdk_spans()
    processes = {id(span.resource) for span in spans}
    produced = list(batches(spans, 64))
    assert len(produced) == len(processes) >= 3  # gateway, users, and each Celery pool child
    for batch in produced:
        assert len(batch) == 64 and len({id(span.resource) for span in batch}) == 1
