"""Workflow routes and canvases (the messages they publish), chord links, and the broken-on-purpose switches.

The broker is a real Redis-protocol server, so the messages read back are what the worker would take;
the trees these workflows produce across real processes are asserted in tests/integration.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from celery import signals
from opentelemetry import propagate, trace
from opentelemetry.propagators.b3 import B3SingleFormat

from services.demo import broken_on_purpose
from services.gateway import workflow_routes
from services.worker import chord_links, workflow_tasks
from tests.unit.conftest import queued_messages

# ------------------------------------------------------------------------------------------ routes


def test_chain_publishes_its_first_step_carrying_the_rest(client, broker):
    response = client.post("/api/workflows/etl", json={"source": "orders"})
    assert response.status_code == 202
    (message,) = queued_messages(broker)
    assert (message["headers"]["task"], message["args"]) == ("etl_extract", ["orders"])
    # The remaining steps travel in the message, last first; the job id answered is the last step's.
    chain = message["embed"]["chain"]
    assert [step["task"] for step in chain] == ["etl_load", "etl_transform"]
    assert chain[0]["options"]["task_id"] == response.get_json()["job_id"]


def test_chord_publishes_every_header_task_carrying_the_callback(client, broker):
    response = client.post("/api/workflows/wordcount", json={"text": "a b c d e", "parts": 2})
    assert response.status_code == 202 and response.get_json()["parts"] == 2
    messages = queued_messages(broker)
    assert [(m["headers"]["task"], m["args"]) for m in messages] == [
        ("count_words", ["a b"]),
        ("count_words", ["c d e"]),
    ]
    for message in messages:
        # What chord_links reads in each header task: the callback's id.
        chord = message["embed"]["chord"]
        assert chord["task"] == "sum_counts"
        assert chord_links.callback_id(type("Request", (), {"chord": chord})) == response.get_json()["job_id"]
    assert len({m["headers"]["group"] for m in messages}) == 1


def test_reminder_is_published_with_the_eta_it_answers(client, broker):
    before = datetime.now(UTC)
    response = client.post("/api/workflows/reminder", json={"note": "call back", "delay_s": 2})
    after = datetime.now(UTC)
    assert response.status_code == 202
    (message,) = queued_messages(broker)
    assert message["args"] == ["call back"]
    # The message's ETA is the request's time plus the delay, and the answer tells the same instant.
    eta = datetime.fromisoformat(message["headers"]["eta"])
    assert before + timedelta(seconds=2) <= eta <= after + timedelta(seconds=2)
    answered = datetime.fromisoformat(response.get_json()["eta"])
    assert abs(answered - eta) < timedelta(milliseconds=100)


@pytest.mark.parametrize(
    ("path", "task", "args", "extra"),
    [
        ("/etl", "etl_extract", ["orders"], {}),
        ("/wordcount", "count_words", [" ".join(workflow_routes.DEFAULT_TEXT.split()[:4])], {"parts": 3}),
        ("/reminder", "send_reminder", ["check the report"], {}),
        ("/followup", "plan_followup", ["check the report"], {}),
    ],
)
def test_every_field_has_a_default(client, broker, path, task, args, extra):
    response = client.post(f"/api/workflows{path}")
    assert response.status_code == 202, response.get_json()
    body = response.get_json()
    assert {key: body[key] for key in extra} == extra
    first = queued_messages(broker)[0]
    assert (first["headers"]["task"], first["args"]) == (task, args)
    if path == "/reminder":  # the default delay: one second
        eta = datetime.fromisoformat(first["headers"]["eta"]) - datetime.now(UTC)
        assert timedelta(seconds=0.5) < eta <= timedelta(seconds=1)


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/etl", {"source": "../etc"}, "invalid_source"),
        ("/etl", {"source": 7}, "invalid_source"),
        ("/wordcount", {"text": ""}, "invalid_text"),
        ("/wordcount", {"text": "x" * 4001}, "invalid_text"),
        ("/wordcount", {"parts": 9}, "invalid_parts"),
        ("/wordcount", {"parts": True}, "invalid_parts"),
        ("/reminder", {"delay_s": -1}, "invalid_delay"),
        ("/reminder", {"delay_s": 61}, "invalid_delay"),
        ("/reminder", {"delay_s": "1"}, "invalid_delay"),
        ("/followup", {"note": ""}, "invalid_note"),
        ("/followup", [1, 2], "invalid_body"),
        ("/by-name", {"note": ""}, "invalid_note"),
    ],
)
def test_bad_input_is_a_400_and_publishes_nothing(client, broker, path, body, error):
    response = client.post(f"/api/workflows{path}", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"] == error
    assert queued_messages(broker) == []


def test_by_name_sends_a_job_the_gateway_has_no_task_object_for(client, broker):
    response = client.post("/api/workflows/by-name", json={"note": "q3"})
    assert response.status_code == 202
    (message,) = queued_messages(broker)
    headers = message["headers"]
    assert (headers["task"], message["args"], headers["id"]) == (
        "archive_note",
        ["q3"],
        response.get_json()["job_id"],
    )


@pytest.mark.parametrize(
    ("path", "task", "current_while_publishing"),
    [
        # A task object in the gateway: the PRODUCER span is current until after_task_publish ends it.
        ("/api/workflows/followup", "plan_followup", "apply_async/plan_followup"),
        # By name, no task object: the instrumentation keeps no handle on the span it started, so it ends
        # (and its context is detached) within before_task_publish, before the message is sent.
        ("/api/workflows/by-name", "archive_note", "POST /api/workflows/by-name"),
    ],
)
def test_what_publishing_by_name_changes_for_the_producer_span(
    client, broker, spans, path, task, current_while_publishing
):
    seen: list[str] = []

    def record(**_: object) -> None:  # connected after the instrumentation's receiver: runs after it
        seen.append(trace.get_current_span().name)

    signals.before_task_publish.connect(record, weak=False)
    try:
        response = client.post(path, json={"note": "q3"})
    finally:
        signals.before_task_publish.disconnect(record)
    assert response.status_code == 202
    assert seen == [current_while_publishing]
    # Either way the span is in the trace, under the request's span, and the message names it.
    (producer,) = [span for span in spans.get_finished_spans() if span.name == f"apply_async/{task}"]
    (server,) = [span for span in spans.get_finished_spans() if span.kind is trace.SpanKind.SERVER]
    assert producer.parent.span_id == server.context.span_id
    (message,) = queued_messages(broker)
    assert message["headers"]["traceparent"].split("-")[2] == trace.format_span_id(producer.context.span_id)


def test_a_broker_down_is_a_503(make_gateway):
    class Down:
        def followup(self, note: str):
            raise ConnectionRefusedError("broker down")

    client = make_gateway(WORKFLOW_QUEUE=Down()).test_client()
    response = client.post("/api/workflows/followup")
    assert response.status_code == 503 and response.get_json()["error"] == "queue_unavailable"


def test_a_redelivered_followup_job_queues_the_same_reminder_which_is_sent_once(broker, worker, spans):
    job_id = str(uuid.uuid4())
    # The broker hands the same job out twice (acknowledged late: its worker died after queueing).
    first = workflow_tasks.plan_followup.apply(args=["call back"], task_id=job_id).get()
    again = workflow_tasks.plan_followup.apply(args=["call back"], task_id=job_id).get()
    assert first == again == {"followup_job_id": workflow_tasks.followup_job_id(job_id)}
    messages = queued_messages(broker)
    assert [(m["headers"]["task"], m["headers"]["id"]) for m in messages] == [
        ("send_reminder", first["followup_job_id"])
    ] * 2
    # Both messages run: the reminder goes out once, and both runs answer what was sent.
    results = [
        workflow_tasks.send_reminder.apply(args=m["args"], task_id=m["headers"]["id"]).get() for m in messages
    ]
    assert results[0] == results[1] and results[0]["note"] == "follow-up: call back"
    events = [e.name for s in spans.get_finished_spans() for e in s.events]
    assert events.count("reminder sent") == 1 and events.count("reminder already sent") == 1


def test_a_different_followup_job_queues_a_different_reminder():
    assert workflow_tasks.followup_job_id(str(uuid.uuid4())) != workflow_tasks.followup_job_id(
        str(uuid.uuid4())
    )


@pytest.mark.parametrize(("words", "parts", "sizes"), [(5, 2, [2, 3]), (3, 8, [1, 1, 1]), (8, 3, [2, 3, 3])])
def test_word_count_splits_the_text_into_consecutive_parts(words, parts, sizes):
    text = " ".join(f"w{i}" for i in range(words))
    header = workflow_tasks.word_count(text, parts).tasks
    pieces = [signature.args[0] for signature in header]
    assert [len(piece.split()) for piece in pieces] == sizes
    assert " ".join(pieces) == text


# ------------------------------------------------------------------------------------- chord links


def test_a_callback_gets_one_link_per_recorded_header_span(spans):
    header_ids = [(0xA1 + n, 0xB1 + n) for n in range(3)]
    entries = ",".join(f"{t:032x}-{s:016x}" for t, s in header_ids) + ",garbage"
    with trace.get_tracer("test").start_as_current_span("run/sum_counts"):
        chord_links._add_links(entries)
    (span,) = spans.get_finished_spans()
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == header_ids
    assert all(link.attributes == chord_links.LINK_ATTRIBUTES for link in span.links)


def test_jobs_outside_a_chord_have_no_callback():
    assert chord_links.callback_id(type("Request", (), {"chord": None})) is None
    assert chord_links.callback_id(object()) is None


# ------------------------------------------------------------------------------------------- switches


def test_every_switch_is_off_by_default(monkeypatch):
    for switch in broken_on_purpose.ALL:
        monkeypatch.delenv(switch.variable, raising=False)
        assert not switch.on
        monkeypatch.setenv(switch.variable, "1")
        assert switch.on


def test_the_b3_switch_replaces_the_global_propagator():
    before = propagate.get_global_textmap()
    try:
        broken_on_purpose.use_b3_propagation()
        assert isinstance(propagate.get_global_textmap(), B3SingleFormat)
    finally:
        propagate.set_global_textmap(before)
