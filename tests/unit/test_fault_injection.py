"""Fault flags: the grammar of `tracehop.fault`, and where a fault lands (Flask, Celery) when allowed."""

from __future__ import annotations

import pytest
from celery import Celery
from flask import Flask
from opentelemetry import baggage, context, trace

from services.demo import fault_injection
from services.demo.fault_injection import Fault, FaultSpecError, InjectedFault, parse_faults
from services.web.observe import observe_flask_app
from services.worker.celery_app import FaultInjectingTask

# ------------------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("users:delay=300ms", [Fault("users", "delay", delay_s=0.3)]),
        ("users:delay=1.5s", [Fault("users", "delay", delay_s=1.5)]),
        ("users:delay=250", [Fault("users", "delay", delay_s=0.25)]),  # a bare number is milliseconds
        ("worker:error", [Fault("worker", "error")]),
        ("gateway:error=503", [Fault("gateway", "error", status=503)]),
        (
            "users:delay=300ms;worker:error",
            [Fault("users", "delay", delay_s=0.3), Fault("worker", "error")],
        ),
        # `+` in a raw baggage header decodes to a space, which also separates faults.
        (
            " Users:DELAY=10ms  worker:error; ",
            [Fault("users", "delay", delay_s=0.01), Fault("worker", "error")],
        ),
    ],
)
def test_valid_flags_parse(text: str, expected: list[Fault]) -> None:
    assert parse_faults(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (";;", "empty"),
        ("billing:error", "unknown service 'billing'"),
        ("users:explode", "not service:delay"),
        ("users", "not service:delay"),
        ("users:delay", "needs a duration"),
        ("users:delay=fast", "needs a duration"),
        ("users:delay=11s", "at most 10 s"),
        ("users:delay=-5ms", "not service:delay"),
        ("users:error=404", "500..599"),
        ("users:error=teapot", "500..599"),
    ],
)
def test_invalid_flags_say_why(text: str, reason: str) -> None:
    with pytest.raises(FaultSpecError, match=reason):
        parse_faults(text)


def test_a_fault_reads_back_as_it_was_written() -> None:
    assert [str(f) for f in parse_faults("users:delay=0.3s;worker:error;gateway:error=502")] == [
        "users:delay=300ms",
        "worker:error",
        "gateway:error=502",
    ]


# ------------------------------------------------------------------------------------ from baggage


def with_flag(value: str) -> context.Context:
    return baggage.set_baggage(fault_injection.BAGGAGE_KEY, value)


def test_only_the_named_service_gets_its_faults() -> None:
    ctx = with_flag("users:delay=5ms;worker:error")
    assert fault_injection.faults_for("users", ctx) == [Fault("users", "delay", delay_s=0.005)]
    assert fault_injection.faults_for("worker", ctx) == [Fault("worker", "error")]
    assert fault_injection.faults_for("gateway", ctx) == []
    assert fault_injection.faults_for("users", context.Context()) == []


def test_an_invalid_flag_is_ignored_not_an_error() -> None:
    assert fault_injection.faults_for("users", with_flag("users:delay=forever")) == []


def test_injecting_marks_the_current_span_then_sleeps_or_raises(spans, monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(fault_injection.time, "sleep", slept.append)
    token = context.attach(with_flag("users:delay=40ms;users:error=503"))
    try:
        with trace.get_tracer("test").start_as_current_span("work"), pytest.raises(InjectedFault) as raised:
            fault_injection.inject_faults("users")
    finally:
        context.detach(token)

    assert slept == [0.04]
    assert raised.value.fault == Fault("users", "error", status=503)
    (span,) = spans.get_finished_spans()
    assert span.attributes["tracehop.fault.injected"] == "users:delay=40ms,users:error=503"
    assert [(event.name, event.attributes["fault.action"]) for event in span.events[:2]] == [
        ("fault injected", "delay"),
        ("fault injected", "error"),
    ]


# -------------------------------------------------------------------------------- Flask and Celery


def flask_app() -> Flask:
    app = Flask("faulty")
    app.get("/ping")(lambda: {"pong": True})
    observe_flask_app(app, "users")
    return app


def test_off_by_default_a_flag_changes_nothing(monkeypatch) -> None:
    monkeypatch.delenv(fault_injection.ENABLE_VARIABLE, raising=False)
    response = flask_app().test_client().get("/ping", headers={"baggage": "tracehop.fault=users:error"})
    assert response.status_code == 200


def test_allowed_a_flag_fails_the_request_with_a_json_error(monkeypatch) -> None:
    monkeypatch.setenv(fault_injection.ENABLE_VARIABLE, "1")
    response = flask_app().test_client().get("/ping", headers={"baggage": "tracehop.fault=users:error=503"})
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"] == "fault_injected" and "users:error=503" in body["message"]
    assert len(body["trace_id"]) == 32


def test_allowed_a_flag_fails_the_job_inside_its_span(monkeypatch) -> None:
    app = Celery("faulty", task_cls=FaultInjectingTask)
    app.conf.task_always_eager = True

    @app.task(name="faulty.ping")
    def ping() -> str:
        return "pong"

    monkeypatch.setenv(fault_injection.ENABLE_VARIABLE, "1")
    assert ping.apply().get() == "pong"
    token = context.attach(with_flag("worker:error"))
    try:
        result = ping.apply()
    finally:
        context.detach(token)
    assert result.failed() and isinstance(result.result, InjectedFault)


@pytest.mark.parametrize("flag", ["worker:error", "worker:error=503"])
def test_a_failed_job_reads_back_from_the_result_backend_unchanged(flag, broker, monkeypatch) -> None:
    """The worker stores the job's exception in the real result backend (valkey) as JSON; the gateway
    rebuilds it from there. It must come back as the same fault with the same message."""
    from services.gateway.job_queue import JobQueue
    from services.worker.celery_app import app as service_app

    app = Celery("faulty-stored", task_cls=FaultInjectingTask)
    app.conf.update(
        result_backend=service_app.conf.result_backend,  # the test's valkey (the broker fixture)
        result_serializer=service_app.conf.result_serializer,
        accept_content=service_app.conf.accept_content,
        task_always_eager=True,
        # Eager jobs store their outcome through the backend exactly as a worker's jobs do.
        task_store_eager_result=True,
    )

    @app.task(name="faulty.stored")
    def stored() -> str:
        return "pong"

    monkeypatch.setenv(fault_injection.ENABLE_VARIABLE, "1")
    token = context.attach(with_flag(flag))
    try:
        job_id = stored.apply().id
    finally:
        context.detach(token)

    job = JobQueue(service_app.conf.result_backend).job_status(job_id)
    assert job["state"] == "FAILURE"
    assert job["result"] == {
        "error": "InjectedFault",
        "message": f"fault injected by baggage tracehop.fault: {flag}",
    }
    rebuilt = service_app.AsyncResult(job_id).result
    assert type(rebuilt) is InjectedFault and rebuilt.fault == parse_faults(flag)[0]


def test_a_kill_point_is_named_and_checked() -> None:
    assert parse_faults("gateway:kill=user_created") == [Fault("gateway", "kill", point="user_created")]
    assert str(parse_faults("gateway:kill=user_created")[0]) == "gateway:kill=user_created"
    with pytest.raises(FaultSpecError, match="no kill point 'nowhere'"):
        parse_faults("gateway:kill=nowhere")
    with pytest.raises(FaultSpecError, match="users has no kill point"):
        parse_faults("users:kill=user_created")


def test_a_kill_point_applies_only_where_it_is_called(monkeypatch) -> None:
    from opentelemetry import baggage, context

    from services.demo import fault_injection

    killed: list[int] = []
    monkeypatch.setenv("TRACEHOP_FAULT_INJECTION", "1")
    monkeypatch.setattr(fault_injection.os, "kill", lambda pid, sig: killed.append(sig))
    token = context.attach(baggage.set_baggage("tracehop.fault", "gateway:kill=user_created"))
    try:
        fault_injection.inject_faults("gateway")  # not a kill point: nothing happens
        assert killed == []
        fault_injection.kill_point("gateway", "user_created")
        assert killed == [fault_injection.signal.SIGKILL]
    finally:
        context.detach(token)
