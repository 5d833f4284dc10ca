"""`make traffic` with `--faults`: requests carrying fault flags in their baggage, and what to expect."""

from __future__ import annotations

from typing import Any

import requests
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from rich.console import Console

from services.demo.fault_injection import BAGGAGE_KEY, parse_faults
from tests.unit.test_traffic import FakeGateway
from tracehop.traffic import EXPECTED_STATUS, FAULT_PLAN, fault_baggage, run_fault_traffic


class RecordingGateway(FakeGateway):
    """The fake gateway of test_traffic, remembering the baggage header of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.baggage: list[str | None] = []

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.baggage.append(self.headers.get("baggage"))
        return super().request(method, url, **kwargs)


def test_every_flag_of_the_plan_is_valid_and_survives_the_baggage_header():
    for request in FAULT_PLAN:
        parse_faults(request.flag)  # raises on a flag the services would ignore
        context = W3CBaggagePropagator().extract({"baggage": fault_baggage(request.flag)})
        assert baggage.get_baggage(BAGGAGE_KEY, context) == request.flag


def test_each_request_carries_its_flag_and_says_what_to_expect():
    gateway = RecordingGateway()

    records = run_fault_traffic("http://127.0.0.1:8080", Console(quiet=True), seed=1, session=gateway)

    assert [fault_baggage(request.flag) for request in FAULT_PLAN] == gateway.baggage
    # What each request should get, by what it is and the fault it carries: the plain kind's answer,
    # except the create whose users call fails, which must come back 503 instead of 201.
    assert [(record.method, record.expected_status) for record in records] == [
        ("POST", EXPECTED_STATUS["create"]),
        ("POST", EXPECTED_STATUS["create"]),
        ("POST", 503),
        ("POST", EXPECTED_STATUS["report"]),
        ("GET", EXPECTED_STATUS["get"]),
    ]
    assert EXPECTED_STATUS["create"] == 201
    assert records[0].note == "users:delay=300ms → users answers 300 ms late: a slow trace"
    assert "baggage" not in gateway.headers  # the session is clean again after each request
    # The fake gateway applies no faults: the users:error request is the one that differs.
    assert [record.as_expected for record in records] == [True, True, False, True, True]
