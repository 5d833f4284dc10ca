"""@traced: span name and kind, arguments as attributes (skip list, secrets, e-mails), outcome, and the
shapes it must work on (function, method, async, Celery task body)."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from celery import Celery
from loguru import logger
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from services.telemetry.safe_attributes import MAX_LENGTH
from services.telemetry.traced import traced


def only_span(spans, name: str):
    """The one finished span called `name`; a function defined in a test is `test_….<locals>.<name>`."""
    matching = [
        s for s in spans.get_finished_spans() if s.name == name or s.name.endswith(f".<locals>.{name}")
    ]
    assert len(matching) == 1, [s.name for s in spans.get_finished_spans()]
    return matching[0]


@traced
def send(user_id: int, email: str, password: str, urgent: bool = False, note: object = None) -> str:
    return "sent"


def test_span_is_internal_named_for_the_function_with_its_arguments(spans):
    assert send(7, "ada@example.org", "hunter2", note={"cc": ["bob@example.net"]}) == "sent"
    span = only_span(spans, "send")
    assert span.kind.name == "INTERNAL"
    assert dict(span.attributes) == {
        "code.function.name": f"{__name__}.send",
        "arg.user_id": 7,
        "arg.email": "a***@example.org",
        "arg.urgent": False,  # a default is recorded too, as the value the function saw
        "arg.note": "{'cc': ['b***@example.net']}",
    }
    assert span.status.status_code.name == "UNSET"


def test_secrets_and_email_addresses_never_reach_the_span(spans):
    @traced
    def login(email: str, password: str, api_token: str, Authorization: str, client_secret: str, **extra):
        return None

    login(
        "ada@example.org",
        "hunter2",
        "tok-123",
        "Bearer abc",
        "s3cr3t",
        session_cookie="c-1",
        x="grace@example.org",
    )
    text = str(dict(only_span(spans, "login").attributes))
    for secret in ("hunter2", "tok-123", "Bearer abc", "s3cr3t", "c-1", "ada@", "grace@"):
        assert secret not in text
    assert "a***@example.org" in text and "g***@example.org" in text


def test_skip_leaves_out_the_named_arguments_and_a_typo_is_refused(spans):
    @traced(skip=("name",))
    def create(name: str, email: str) -> None:
        return None

    create("Ada Lovelace", "ada@example.org")
    attributes = only_span(spans, "create").attributes
    assert "arg.name" not in attributes and attributes["arg.email"] == "a***@example.org"
    assert "Ada Lovelace" not in str(dict(attributes))

    with pytest.raises(TypeError, match="nmae"):
        traced(skip=("nmae",))(lambda name: None)


def test_name_overrides_the_qualified_name(spans):
    @traced(name="mail.deliver")
    def deliver() -> None:
        return None

    deliver()
    span = only_span(spans, "mail.deliver")
    assert span.attributes["code.function.name"].endswith(".<locals>.deliver")


def test_values_are_rendered_short_and_as_valid_attribute_types(spans):
    @traced
    def take(text: str, big: int, ratio: float, items: list, nothing: object) -> None:
        return None

    take("x" * 10_000, 2**70, 0.5, list(range(1000)), None)
    attributes = only_span(spans, "take").attributes
    assert len(attributes["arg.text"]) == MAX_LENGTH
    assert attributes["arg.big"] == str(2**70)  # OTLP integers are 64-bit
    assert attributes["arg.ratio"] == 0.5
    assert attributes["arg.items"].endswith("...]") and len(attributes["arg.items"]) < 100
    assert attributes["arg.nothing"] == "None"


def test_an_exception_marks_the_span_as_error_and_is_re_raised_untouched(spans):
    error = ValueError("no mailbox for ada@example.org")

    @traced
    def fail() -> None:
        raise error

    with pytest.raises(ValueError) as raised:
        fail()
    assert raised.value is error
    span = only_span(spans, "fail")
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "ValueError: no mailbox for a***@example.org"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "no mailbox for a***@example.org"
    assert "ada@" not in event.attributes["exception.stacktrace"]


def test_record_result_records_the_rendered_return_value(spans):
    @traced(record_result=True)
    def lookup(user_id: int) -> dict:
        return {"id": user_id, "email": "ada@example.org"}

    assert lookup(3) == {"id": 3, "email": "ada@example.org"}  # the caller gets the real value
    # reprlib sorts a dict's keys
    assert only_span(spans, "lookup").attributes["result"] == "{'email': 'a***@example.org', 'id': 3}"
    send(1, "a@b.org", "x")
    assert "result" not in only_span(spans, "send").attributes  # off by default


def test_the_span_is_current_inside_so_calls_and_logs_land_in_it(spans):
    tracer = trace.get_tracer(__name__)

    @traced
    def outer(user_id: int) -> None:
        logger.info("fetching user", user_id=user_id)
        with tracer.start_as_current_span("inner"):
            pass

    outer(5)
    parent, inner = only_span(spans, "outer"), only_span(spans, "inner")
    assert inner.parent.span_id == parent.context.span_id
    assert [(e.name, e.attributes["user_id"]) for e in parent.events] == [("fetching user", 5)]


class Store:
    @traced
    def get(self, user_id: int) -> int:
        return user_id

    @classmethod
    @traced
    def build(cls, size: int) -> Store:
        return cls()

    @traced
    @staticmethod
    def check(value: str) -> bool:
        return True


def test_methods_are_named_by_class_and_skip_self_and_cls(spans):
    assert Store().get(4) == 4
    Store.build(2)
    assert Store.check("v")
    get, build, check = (
        only_span(spans, "Store.get"),
        only_span(spans, "Store.build"),
        only_span(spans, "Store.check"),
    )
    assert dict(get.attributes) == {"code.function.name": f"{__name__}.Store.get", "arg.user_id": 4}
    assert "arg.cls" not in build.attributes and build.attributes["arg.size"] == 2
    assert check.attributes["arg.value"] == "v"


def test_async_functions_are_traced_across_awaits(spans):
    @traced
    async def fetch(user_id: int) -> int:
        await asyncio.sleep(0)
        logger.info("fetched", user_id=user_id)
        return user_id * 2

    @traced
    async def broken() -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    assert inspect.iscoroutinefunction(fetch)
    assert asyncio.run(fetch(21)) == 42
    with pytest.raises(RuntimeError):
        asyncio.run(broken())
    span = only_span(spans, "fetch")
    assert span.attributes["arg.user_id"] == 21
    assert span.end_time - span.start_time > 0 and [e.name for e in span.events] == ["fetched"]
    assert only_span(
        spans, "test_async_functions_are_traced_across_awaits.<locals>.broken"
    ).status.status_code.name == ("ERROR")


def test_generator_functions_are_refused():
    with pytest.raises(TypeError, match="generator"):

        @traced
        def numbers():
            yield 1


def test_nothing_is_rendered_when_the_span_is_not_recorded(spans):
    rendered = []

    class Costly:
        def __repr__(self) -> str:
            rendered.append(1)
            return "Costly()"

    @traced
    def work(value: object) -> None:
        return None

    # A parent that was not sampled: the SDK's default sampler does not record its children either.
    unsampled = NonRecordingSpan(SpanContext(0x1F, 0x2F, is_remote=False, trace_flags=TraceFlags(0)))
    with trace.use_span(unsampled):
        work(Costly())
    assert rendered == [] and spans.get_finished_spans() == ()
    work(Costly())
    assert rendered == [1]


# --------------------------------------------------------------------------------------------- Celery

celery = Celery("traced-test", set_as_current=False)
celery.conf.update(task_always_eager=True, task_store_eager_result=False)


@celery.task(bind=True, name="traced_test.greet")
@traced
def greet(self, user_id: int, email: str) -> str:
    return f"task {self.request.id} greeted {user_id}"


@celery.task(bind=True, name="traced_test.flaky", max_retries=1, default_retry_delay=0)
@traced
def flaky(self, user_id: int) -> int:
    if self.request.retries == 0:
        raise self.retry()
    return user_id


def test_a_celery_task_body_is_traced_and_its_bound_self_skipped(spans):
    result = greet.apply(args=[9, "ada@example.org"])
    assert result.get().endswith("greeted 9")
    span = only_span(spans, "greet")
    assert dict(span.attributes) == {
        "code.function.name": f"{__name__}.greet",
        "arg.user_id": 9,
        "arg.email": "a***@example.org",
    }


def test_celery_still_checks_a_traced_tasks_arguments():
    with pytest.raises(TypeError):
        greet.apply_async(args=[1, 2, 3])


def test_a_celery_retry_is_not_an_error(spans):
    assert flaky.apply(args=[3]).get() == 3
    attempts = [s for s in spans.get_finished_spans() if s.name == "flaky"]
    assert len(attempts) == 2
    assert {s.status.status_code.name for s in attempts} == {"UNSET"}
