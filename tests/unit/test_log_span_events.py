"""Log events in spans: a log call made while a span is current becomes an event on that span."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from loguru import logger
from opentelemetry import trace

from services.telemetry.logs import NO_SPAN_EVENT, InterceptHandler, install_record_patcher

tracer = trace.get_tracer(__name__)


@pytest.fixture
def records() -> Iterator[list[dict]]:
    """Every loguru record of the test, as the sinks receive it."""
    captured: list[dict] = []
    handler_id = logger.add(
        lambda message: captured.append(message.record), level="DEBUG", format="{message}"
    )
    yield captured
    logger.remove(handler_id)


@pytest.fixture
def span_events_off(monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("TRACEHOP_LOG_SPAN_EVENTS", "false")
    install_record_patcher()
    yield
    install_record_patcher(span_events=True)  # what tests/unit/conftest.py installs for the session


def events_of(spans, name: str) -> list[tuple[str, dict]]:
    (span,) = [s for s in spans.get_finished_spans() if s.name == name]
    return [(event.name, dict(event.attributes)) for event in span.events]


def test_a_log_call_becomes_an_event_on_the_current_span(spans):
    with tracer.start_as_current_span("fetch"):
        logger.info("fetching user", user_id=7)
        with tracer.start_as_current_span("nested"):
            logger.warning("cache miss", key="users:7")
    assert events_of(spans, "fetch") == [("fetching user", {"log.severity": "INFO", "user_id": 7})]
    assert events_of(spans, "nested") == [("cache miss", {"log.severity": "WARNING", "key": "users:7"})]


def test_secrets_are_left_out_and_email_addresses_masked(spans):
    with tracer.start_as_current_span("mail"):
        logger.info(
            "mail sent to ada@example.org", recipient="ada@example.org", password="hunter2", api_token="t"
        )
    ((name, attributes),) = events_of(spans, "mail")
    assert name == "mail sent to a***@example.org"
    assert attributes == {"log.severity": "INFO", "recipient": "a***@example.org"}


def test_stdlib_records_routed_to_loguru_become_events_with_their_logger(spans):
    stdlib = logging.getLogger("tests.celery_like")
    stdlib.addHandler(handler := InterceptHandler())
    stdlib.propagate = False
    try:
        with tracer.start_as_current_span("job"):
            stdlib.warning("Task retried in %ss", 2)
    finally:
        stdlib.removeHandler(handler)
    assert events_of(spans, "job") == [
        ("Task retried in 2s", {"log.severity": "WARNING", "log.logger": "tests.celery_like"})
    ]


def test_an_exception_logged_in_a_span_names_its_type(spans):
    with tracer.start_as_current_span("step"):
        try:
            raise KeyError("x")
        except KeyError:
            logger.exception("step failed")
    ((name, attributes),) = events_of(spans, "step")
    assert (name, attributes["log.severity"], attributes["exception.type"]) == (
        "step failed",
        "ERROR",
        "KeyError",
    )


def test_a_line_can_opt_out_and_lines_outside_spans_make_no_event(spans, records):
    logger.info("outside any span")
    with tracer.start_as_current_span("request"):
        logger.bind(**{NO_SPAN_EVENT: True}).info("request", status=200)
    assert events_of(spans, "request") == []
    # The lines themselves are still logged, with the trace context.
    assert [r["message"] for r in records] == ["outside any span", "request"]
    assert records[0]["extra"]["trace_id"] == "" and len(records[1]["extra"]["trace_id"]) == 32


def test_a_span_already_ended_gets_no_event_and_logging_still_works(spans, records):
    # As in the services, the SDK's own warnings come back through loguru: an event added to an ended span
    # would make it warn, and that warning would come back here.
    sdk_logger = logging.getLogger("opentelemetry.sdk.trace")
    sdk_logger.addHandler(handler := InterceptHandler())
    span = tracer.start_span("finished")
    span.end()
    try:
        with trace.use_span(span):
            logger.info("written after the end")
    finally:
        sdk_logger.removeHandler(handler)
    assert events_of(spans, "finished") == []
    assert [r["message"] for r in records] == ["written after the end"]


def test_the_setting_turns_events_off_but_keeps_the_trace_ids(spans, records, span_events_off):
    with tracer.start_as_current_span("quiet"):
        logger.info("fetching user", user_id=7)
    assert events_of(spans, "quiet") == []
    assert len(records[0]["extra"]["trace_id"]) == 32
