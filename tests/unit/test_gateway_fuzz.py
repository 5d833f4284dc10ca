"""A fuzz run of the gateway against its own OpenAPI document (schemathesis), bounded to stay quick.

schemathesis reads /openapi.json from the in-process app and, per operation, generates valid and invalid
requests (bodies, ids, content types, methods). Each response is checked: no 5xx, a status the document
lists, the documented content type, a body matching the documented schema, and invalid input refused
with a 4xx. users runs for real over HTTP and the broker is a real Redis-protocol server, so a created
user and a queued job are real too.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from services.gateway.openapi import DOCUMENT

# (method, path, whether it takes input that can be invalid: only then is there a negative mode)
OPERATIONS = [
    ("POST", "/api/users", True),
    ("GET", "/api/users/{user_id}", True),
    ("POST", "/api/users/{user_id}/report", True),
    ("GET", "/api/jobs/{job_id}", True),
    ("POST", "/api/workflows/etl", True),
    ("POST", "/api/workflows/wordcount", True),
    ("POST", "/api/workflows/reminder", True),
    ("POST", "/api/workflows/followup", True),
    ("POST", "/api/workflows/by-name", True),
    ("GET", "/healthz", False),
    ("GET", "/readyz", False),
    ("GET", "/openapi.json", False),
    ("GET", "/", False),
]
RUNS = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, has_input in OPERATIONS
    for mode in GenerationMode
    if has_input or mode is GenerationMode.POSITIVE
]

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
    checks.unsupported_method,
]


@pytest.fixture(scope="module")
def gateway_schema(make_gateway):
    return schemathesis.openapi.from_wsgi("/openapi.json", make_gateway())


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_gateway_conforms_to_its_openapi_document(gateway_schema, method, path, mode):
    # The strategies directly, not schemathesis' pytest plugin (its fixture loader needs pytest < 9).
    operation = gateway_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=20,
        deadline=None,
        database=None,  # reproducible from the seed alone, no .hypothesis/ left in the tree
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def run(case):
        case.call_and_validate(checks=CHECKS)

    run()


def test_every_route_of_the_gateway_is_documented(gateway_schema):
    app = gateway_schema.app
    documented = {(m, p) for p, ops in DOCUMENT["paths"].items() for m in (o.upper() for o in ops)}
    for rule in app.url_map.iter_rules():
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (method, path) in documented, (
                f"{method} {path} is missing from services/gateway/openapi.py"
            )
    assert {(m, p) for m, p, _ in OPERATIONS} | {("GET", "/metrics")} == documented
