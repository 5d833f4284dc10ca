"""celery_task_attributes.py sets exactly the attributes the stock Celery instrumentation sets.

Two checks: for hypothesis-generated task requests (Celery's own `Context`) and signal-argument dicts —
every name the stock function reads, with values of the types it special-cases (empty strings, zero
retries, time limits with and without None, delivery info with and without a routing key, queue
declarations of every exchange type) and arbitrary others — ours sets the same attributes, with the same
types and in the same order, as the stock function; and real jobs published to a Redis-protocol broker
and run through Celery's task tracer (success, retry, failure) export the same spans either way.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from celery.app.task import Context
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu import Exchange, Queue
from opentelemetry.instrumentation.celery import utils as otel_celery_utils
from opentelemetry.sdk.trace import TracerProvider

from services.telemetry import celery_task_attributes
from tests.unit.test_flask_request_attributes_differential import shape

REDIS_SCOPE = "opentelemetry.instrumentation.redis"

scalars = st.one_of(
    st.none(),
    st.just(""),
    st.just(0),
    st.integers(-5, 10**12),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.booleans(),
)
values = {
    "timelimit": st.one_of(
        st.tuples(st.none() | st.integers(1, 300), st.none() | st.floats(1, 300)),
        st.lists(st.none() | st.integers(1, 300), min_size=2, max_size=2),
        scalars,
    ),
    "retries": st.one_of(st.integers(0, 5), scalars),
    "delivery_info": st.one_of(
        st.fixed_dictionaries(
            {"exchange": st.text(max_size=4), "priority": st.integers(0, 9)},
            optional={
                "routing_key": st.sampled_from([None, "", "celery"]) | st.text(max_size=6),
                "redelivered": st.booleans(),
            },
        ),
        st.none(),
    ),
    "declare": st.one_of(
        st.lists(
            st.sampled_from(["direct", "topic", "fanout", "headers"]).map(
                lambda kind: Queue("q", Exchange("x", type=kind))
            ),
            max_size=3,
        ),
        st.none(),
    ),
}
contexts = st.fixed_dictionaries(
    {},
    optional={key: values.get(key, scalars) for key in otel_celery_utils.CELERY_CONTEXT_ATTRIBUTES}
    | {"args": st.lists(st.integers(), max_size=2), "sender": st.text(max_size=4)},
)


@settings(max_examples=400, deadline=None)
@given(contexts, st.booleans())
def test_attributes_equal_the_stock_function(fields: dict[str, Any], as_request: bool) -> None:
    tracer = TracerProvider().get_tracer("differential")
    attributes = []
    for function in (
        otel_celery_utils.set_attributes_from_context,
        celery_task_attributes.set_attributes_from_context,
    ):
        span = tracer.start_span("run/task")
        try:
            function(span, Context(fields) if as_request else dict(fields))
            raised = None
        except Exception as error:  # values the stock function cannot take: it must fail the same way
            raised = (type(error), str(error))
        attributes.append((raised, [(k, type(v).__name__, v) for k, v in span.attributes.items()]))
    assert attributes[0] == attributes[1]


def test_real_jobs_give_the_stock_spans(worker: None, broker: Any, spans: Any) -> None:
    from services.worker import tasks

    def jobs() -> None:
        tasks.send_welcome_email.apply(args=[1, "example.org"], task_id="job-1")
        tasks.send_welcome_email.apply(args=[2, "greylisted.example"], task_id="job-2")  # retries once
        tasks.send_welcome_email.apply(args=[3, "maildown.example"], task_id="job-3")  # retries, fails
        tasks.send_welcome_email.apply_async(args=[3, "example.org"], task_id="job-4")  # PRODUCER span

    runs = []
    try:
        for install in (celery_task_attributes.uninstall, celery_task_attributes.install):
            install()
            spans.clear()
            broker.delete("celery")
            random.seed(11)  # the retry's jittered countdown is in its reason attribute
            jobs()
            # Redis command spans (the broker, the result backend) are left out: threads of this test
            # session also write to Redis, so their order is not the jobs'; they are leaves anyway.
            finished = spans.get_finished_spans()
            runs.append(shape([s for s in finished if s.instrumentation_scope.name != REDIS_SCOPE]))
    finally:
        celery_task_attributes.uninstall()
        broker.delete("celery")
    names = [span[0] for span in runs[0]]
    assert "apply_async/send_welcome_email" in names
    assert ("celery.state", "str", "FAILURE") in [a for span in runs[0] for a in span[4]]
    assert runs[0] == runs[1]


def test_another_instrumentation_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(
        celery_task_attributes.CHECKED_VERSIONS, "opentelemetry-instrumentation-celery", "0.1b0"
    )
    with pytest.raises(RuntimeError, match="0.1b0"):
        celery_task_attributes.install()


def test_checked_versions_are_the_locked_ones() -> None:
    lock = (Path(__file__).parents[2] / "requirements.lock").read_text().splitlines()
    for name, checked in celery_task_attributes.CHECKED_VERSIONS.items():
        assert f"{name}=={checked}" in lock
