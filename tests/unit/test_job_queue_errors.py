"""Which errors of the job queue's libraries the gateway answers with 503 (QueueUnavailable)."""

from __future__ import annotations

import pytest
import redis
from celery.backends.asynchronous import E_RETRY_LIMIT_EXCEEDED
from kombu.exceptions import OperationalError

from services.gateway.job_queue import QueueUnavailable, broker_errors_as_unavailable


@pytest.mark.parametrize(
    "error", [OperationalError("broker gone"), redis.ConnectionError("refused"), OSError()]
)
def test_a_broker_or_backend_connection_error_is_unavailable(error):
    with pytest.raises(QueueUnavailable), broker_errors_as_unavailable():
        raise error


def test_the_result_consumers_failed_reconnect_is_unavailable_not_a_500():
    # What celery/backends/asynchronous.py's reconnect_on_error raises when Redis stays away while
    # apply_async subscribes to the new job's result.
    with pytest.raises(QueueUnavailable, match="ConnectionError"), broker_errors_as_unavailable():
        try:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        except redis.ConnectionError as exc:
            raise RuntimeError(E_RETRY_LIMIT_EXCEEDED) from exc


def test_any_other_runtime_error_is_still_a_bug():
    with pytest.raises(RuntimeError, match="a bug"), broker_errors_as_unavailable():
        raise RuntimeError("a bug")
