"""The same traces with either OTLP/HTTP encoding: `OTEL_EXPORTER_OTLP_PROTOCOL=http/json` (tracehop's
OTLP/JSON exporter, the default) and `http/protobuf` (the SDK's exporter).

Each protocol gets a private stack with the variable set explicitly, so this module tests both whatever
the session's stack uses; `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf make test` runs the whole suite on
the SDK's exporter as well (the services inherit the variable).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.expected_trees import CREATE_USER_TREE, REPORT_TREE
from tests.integration.stack import SHAPES_ENV, RunningStack, start_private_stack, stop_in_background
from tests.integration.test_core_traces import create_user

pytestmark = pytest.mark.integration

# The low 8 bits of OTLP span flags are the W3C trace flags: our JSON exporter sends them (the OTLP
# specification asks for them), the SDK's protobuf encoder leaves them 0 (opentelemetry-python#4666).
# So the flags the trace store kept say which exporter sent the spans.
SENDS_TRACE_FLAGS = {"http/json": True, "http/protobuf": False}


@pytest.fixture(scope="module", params=["http/json", "http/protobuf"])
def protocol_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, RunningStack]]:
    env = {**SHAPES_ENV, "OTEL_EXPORTER_OTLP_PROTOCOL": request.param}
    running = start_private_stack(tmp_path_factory.mktemp(request.param.replace("/", "-")), env)
    try:
        yield request.param, running
    finally:
        stop_in_background(running.stack)


def _stored_flags(stack: RunningStack, trace_id: str) -> set[int]:
    document = stack.http.get(f"{stack.stack.urls['query']}/api/v3/traces/{trace_id}", timeout=10).json()
    return {
        span.get("flags", 0)
        for resource_spans in document["result"]["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    }


def test_trees_are_complete_with_each_protocol(protocol_stack: tuple[str, RunningStack]) -> None:
    protocol, stack = protocol_stack
    response = create_user(stack)
    created = response.json()
    roots = stack.assert_tree(created["trace_id"], CREATE_USER_TREE)
    # The stack opts in to the stable HTTP/database semantic conventions: each thing said once.
    users_server = next(n.span for _, n in roots[0].walk() if n.span.name == "POST /users")
    assert users_server.attributes["http.response.status_code"] == 201
    assert not {"http.host", "http.server_name", "net.host.name"} & set(users_server.attributes)
    assert stack.wait_for_job(created["job_id"])["state"] == "SUCCESS"

    report = stack.http.post(f"{stack.gateway}/api/users/{created['user']['id']}/report", timeout=10)
    assert report.status_code == 202, report.text
    stack.assert_tree(report.json()["trace_id"], REPORT_TREE)

    flags = _stored_flags(stack, created["trace_id"])
    # The W3C trace flags of this trace (sampled, random) as the gateway answered them in traceresponse.
    trace_flags = int(response.headers["traceresponse"].split("-")[3], 16)
    assert trace_flags & 1
    expected_low_byte = trace_flags if SENDS_TRACE_FLAGS[protocol] else 0
    assert {flag & 0xFF for flag in flags} == {expected_low_byte}, (protocol, flags)
    # Every span: the parent's remoteness is known (0x100); the spans under a propagated context are remote.
    assert all(flag & 0x100 for flag in flags) and any(flag & 0x200 for flag in flags), flags
