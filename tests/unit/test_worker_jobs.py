"""worker: the jobs, their retry policy, their metrics and their spans (tasks run eagerly in-process)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from services.clients.users_client import UsersClient
from services.worker import tasks
from services.worker.mail import TransientDeliveryError, deliver_welcome_email
from tests.unit.conftest import as_query_spans, jobs_total
from tracehop.traces.tree import assert_trace_tree

pytestmark = pytest.mark.usefixtures("worker")


def test_greylisting_defers_only_the_first_attempt():
    with pytest.raises(TransientDeliveryError):
        deliver_welcome_email(1, "greylisted.example", attempt=0)
    deliver_welcome_email(1, "greylisted.example", attempt=1)
    deliver_welcome_email(1, "example.org", attempt=0)


def test_welcome_email_job_succeeds_and_is_counted(spans):
    before = jobs_total("send_welcome_email", "succeeded")
    result = tasks.send_welcome_email.apply(args=[7, "example.org"])
    assert result.get() == {"user_id": 7, "delivered": True, "attempts": 1}
    assert jobs_total("send_welcome_email", "succeeded") == before + 1
    assert_trace_tree(
        as_query_spans(spans.get_finished_spans(), "worker"),
        """
        worker  CONSUMER  run/send_welcome_email
        └─ worker  INTERNAL  deliver_welcome_email
        """,
    )


def test_delivery_is_a_traced_span_holding_its_log_lines(spans):
    tasks.send_welcome_email.apply(args=[7, "greylisted.example"])
    first, second = sorted(
        (s for s in spans.get_finished_spans() if s.name == "deliver_welcome_email"),
        key=lambda s: s.start_time,
    )
    assert (first.attributes["arg.attempt"], second.attributes["arg.attempt"]) == (0, 1)
    assert first.attributes["arg.recipient_domain"] == "greylisted.example"
    # The deferred attempt failed (its span says so); the job's retry is read on the CONSUMER span.
    assert first.status.status_code.name == "ERROR" and second.status.status_code.name == "UNSET"
    assert [e.name for e in first.events] == [
        "delivering welcome e-mail",
        "delivery deferred: greylisted",
        "exception",
    ]
    delivered = [e for e in second.events if e.name == "welcome e-mail delivered"]
    assert delivered and delivered[0].attributes["user_id"] == 7


def test_greylisted_job_retries_then_succeeds_and_both_attempts_are_counted():
    retried, succeeded = (
        jobs_total("send_welcome_email", "retried"),
        jobs_total("send_welcome_email", "succeeded"),
    )
    retries = REGISTRY.get_sample_value("tracehop_job_retries_total", {"task": "send_welcome_email"}) or 0.0
    result = tasks.send_welcome_email.apply(args=[8, "greylisted.example"])
    assert result.get()["attempts"] == 2
    assert jobs_total("send_welcome_email", "retried") == retried + 1
    assert jobs_total("send_welcome_email", "succeeded") == succeeded + 1
    assert (
        REGISTRY.get_sample_value("tracehop_job_retries_total", {"task": "send_welcome_email"}) == retries + 1
    )


def test_report_job_calls_users_over_http(users_server, users_app, monkeypatch, spans):
    user = users_app.extensions["user_store"].create("Grace", "grace@example.org")
    monkeypatch.setattr(tasks, "_users_client", UsersClient(users_server, token="test-token"))
    spans.clear()
    report = tasks.generate_report.apply(args=[user.id]).get()
    assert report["user_id"] == user.id and report["name"] == "Grace"
    assert_trace_tree(
        as_query_spans(spans.get_finished_spans(), "test"),
        """
        test  CONSUMER  run/generate_report
        └─ test  INTERNAL  build_report
           └─ test  CLIENT    GET
              └─ test  SERVER    GET /users/<int:user_id>
                 ├─ test  INTERNAL  auth_check
                 ├─ test  INTERNAL  UserStore.get
                 │  └─ test  CLIENT    HGETALL
                 └─ test  INTERNAL  serialize
        """,
    )


def test_report_for_missing_user_fails_without_retrying(users_server, monkeypatch):
    monkeypatch.setattr(tasks, "_users_client", UsersClient(users_server, token="test-token"))
    failed = jobs_total("generate_report", "failed")
    result = tasks.generate_report.apply(args=[10**9])
    assert result.state == "FAILURE"
    assert isinstance(result.result, tasks.ReportFailed)
    assert jobs_total("generate_report", "failed") == failed + 1
