"""Service-to-service authentication: callers present the shared token in `X-Service-Token`.

Pattern 2, a manual span: the way to trace a step that no library instruments and that is not a whole
function worth `@traced` (docs/instrumentation-patterns.md). Copy its shape:

1. one tracer per module, named for the module;
2. `start_as_current_span("<step>")`: the span is current inside the block, so the spans of anything
   called there and every log line become its children and events; it ends when the block ends, even
   on an exception (which it records, setting the status to ERROR);
3. attributes that explain the outcome, set as soon as they are known; never the secret itself;
4. an explicit ERROR status with a short reason when the step fails by design (no exception needed).
"""

from __future__ import annotations

import hmac

from flask import current_app, request
from loguru import logger
from opentelemetry import trace

from services.clients.users_client import SERVICE_TOKEN_HEADER
from services.web.http_errors import ApiError

tracer = trace.get_tracer(__name__)


def require_service_token() -> None:
    """Raise a 401 ApiError unless the request carries the shared service token."""
    with tracer.start_as_current_span("auth_check") as span:
        presented = request.headers.get(SERVICE_TOKEN_HEADER, "")
        expected = current_app.config["SERVICE_TOKEN"]
        # compare_digest: the time taken must not tell an attacker how much of the token was right.
        granted = bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())
        # Which check ran, whether a token came at all (a missing header and a wrong token are different
        # bugs in a caller), and the verdict: enough to debug a 401 from the trace alone.
        span.set_attribute("auth.method", "service_token")
        span.set_attribute("auth.token_present", bool(presented))
        span.set_attribute("auth.outcome", "granted" if granted else "denied")
        if not granted:
            # Also a span event on auth_check (pattern 3), next to the attributes that explain it.
            logger.warning("service token rejected", token_present=bool(presented))
            span.set_status(trace.StatusCode.ERROR, "service token missing or wrong")
            raise ApiError(401, "unauthorized", f"a valid {SERVICE_TOKEN_HEADER} header is required")
