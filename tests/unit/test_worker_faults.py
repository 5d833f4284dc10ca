"""worker: the poison job (a mail server that never accepts) and the stepwise long job (tasks run eagerly)."""

from __future__ import annotations

import os

import pytest

from services.worker import tasks
from services.worker.mail import TransientDeliveryError, deliver_welcome_email
from tests.unit.conftest import jobs_total

pytestmark = pytest.mark.usefixtures("worker")


@pytest.mark.parametrize("attempt", [0, 1, 5])
def test_a_down_mail_server_defers_every_attempt(attempt):
    with pytest.raises(TransientDeliveryError, match="421"):
        deliver_welcome_email(1, "maildown.example", attempt=attempt)


def test_the_poison_job_uses_up_its_retries_then_fails_for_good(spans):
    failed, retried = jobs_total("send_welcome_email", "failed"), jobs_total("send_welcome_email", "retried")
    result = tasks.send_welcome_email.apply(args=[7, "maildown.example"])
    assert result.state == "FAILURE" and isinstance(result.result, TransientDeliveryError)
    max_retries = tasks.send_welcome_email.max_retries
    assert jobs_total("send_welcome_email", "failed") == failed + 1
    assert jobs_total("send_welcome_email", "retried") == retried + max_retries
    consumers = sorted(
        (s for s in spans.get_finished_spans() if s.kind.name == "CONSUMER"), key=lambda s: s.start_time
    )
    assert [s.attributes["celery.state"] for s in consumers] == ["RETRY"] * max_retries + ["FAILURE"]
    assert consumers[-1].status.status_code.name == "ERROR"


def test_the_long_job_leaves_one_finished_span_per_step(spans):
    result = tasks.long_job.apply(args=[3, 1])
    assert result.get() == {"steps": 3, "redelivered": False}
    steps = [s for s in spans.get_finished_spans() if s.name == "long_job.step"]
    assert sorted(s.attributes["job.step"] for s in steps) == [0, 1, 2]
    assert all(s.resource.attributes["process.pid"] == os.getpid() for s in steps)
    (consumer,) = [s for s in spans.get_finished_spans() if s.kind.name == "CONSUMER"]
    assert consumer.attributes["job.redelivered"] is False
    assert {s.parent.span_id for s in steps} == {consumer.context.span_id}
