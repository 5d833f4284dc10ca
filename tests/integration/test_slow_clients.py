"""The public door against slow clients (issue 16), on a private stack.

256 connections trickle their headers and 256 their body, one line or byte a second, while normal
requests are measured: each must be answered within 1 s, and a `make traffic` run must get its usual
statuses. Then the slow clients go away and nothing may be left stuck: the gateway's open-connection
gauge drops back, and a request is still answered at once.

On gunicorn's gthread worker (2 × 4 threads) eight such clients were enough to make every request time
out; this test fails there with "ReadTimeout after 5.0s" probes.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.integration.expected_trees import CREATE_USER_TREE
from tests.integration.fault_tools import metric_value
from tests.integration.stack import RunningStack, private_stack
from tracehop.slow_clients import slow_client_phase
from tracehop.traffic import TrafficRun

# The defaults of the public door, except one process (the slow clients then all land on it).
ENV = {"GUNICORN_WORKERS": "1", "OTEL_BSP_SCHEDULE_DELAY": "200", "TRACEHOP_MAIL_LATENCY_MS": "1"}
SLOW_HEADER_CLIENTS = 256
SLOW_BODY_CLIENTS = 256
# Shorter than the header and body timeouts (10 s): the slow clients are all still held while we measure.
PHASE_S = 6.0
ANSWER_LIMIT_S = 1.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    with private_stack(tmp_path_factory.mktemp("slow-clients"), ENV) as running:
        yield running


def open_connections(stack: RunningStack) -> float:
    return metric_value(f"{stack.gateway}/metrics", "tracehop_door_connections_open")


def test_slow_clients_do_not_starve_normal_requests_and_leave_nothing_stuck(stack: RunningStack) -> None:
    traffic_session = requests.Session()
    traffic_session.trust_env = False
    traffic = TrafficRun(stack.gateway, session=traffic_session, seed=16)
    traffic_errors: list[BaseException] = []

    def send_traffic() -> None:
        # `make traffic` meanwhile, its first ten requests (one of each kind), one after the other.
        try:
            time.sleep(1.0)  # once every slow client is connected
            for kind in ("create", "get", "create", "report", "job", "get", "missing", "create", "job"):
                traffic.send(kind)
        except BaseException as error:  # re-raised below, in the test's thread
            traffic_errors.append(error)

    sender = threading.Thread(target=send_traffic, name="traffic")
    sender.start()
    phase = slow_client_phase(
        stack.gateway,
        duration_s=PHASE_S,
        header_clients=SLOW_HEADER_CLIENTS,
        body_clients=SLOW_BODY_CLIENTS,
        probe_timeout_s=5.0,
    )
    sender.join(timeout=60)
    traffic_session.close()

    assert phase.opened == SLOW_HEADER_CLIENTS + SLOW_BODY_CLIENTS
    # The server held every slow connection during the phase (none was refused or timed out yet).
    assert phase.still_open_at_end == phase.opened, phase.answers
    assert not phase.failures, f"normal requests failed while slow clients waited: {phase.failures[:5]}"
    assert phase.worst_s < ANSWER_LIMIT_S, f"slowest /healthz {phase.worst_s:.2f}s"
    assert phase.after_s is not None and phase.after_s < ANSWER_LIMIT_S
    assert not traffic_errors, traffic_errors
    statuses = [(record.path, record.status, record.expected_status) for record in traffic.records]
    assert len(statuses) == 9
    assert all(status == expected for _, status, expected in statuses), statuses

    # Nothing stuck: the gateway lets go of every slow connection (the metric's own request is one).
    deadline = time.monotonic() + 10
    while (still := open_connections(stack)) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert still <= 1, f"{still} connections still open after the slow clients left"
    started = time.monotonic()
    assert stack.http.get(f"{stack.gateway}/readyz", timeout=5).status_code == 200
    assert time.monotonic() - started < ANSWER_LIMIT_S


def test_concurrent_requests_on_one_gevent_process_keep_their_exact_trees(stack: RunningStack) -> None:
    # 16 creates at once on the one gateway process: each greenlet must keep its own trace context
    # (contextvars per greenlet), or spans would land under another request's parent.
    def create(number: int) -> str:
        session = requests.Session()
        session.trust_env = False
        with session:
            body = {"name": "Concurrent", "email": f"concurrent-{number}-{uuid.uuid4().hex[:6]}@example.org"}
            response = session.post(f"{stack.gateway}/api/users", json=body, timeout=15)
        assert response.status_code == 201, response.text
        return response.json()["trace_id"]

    with ThreadPoolExecutor(max_workers=16) as pool:
        trace_ids = list(pool.map(create, range(16)))
    assert len(set(trace_ids)) == 16
    for trace_id in trace_ids:
        stack.assert_tree(trace_id, CREATE_USER_TREE)
