"""Service-to-service authentication: callers present the shared token in `X-Service-Token`.

Written as a manual span, the way to trace a step that no library instruments: the span is named for the
step (`auth_check`) and records its outcome as attributes, never the token itself.
"""

from __future__ import annotations

import hmac

from flask import current_app, request
from opentelemetry import trace

from services.common.http_errors import ApiError
from services.common.users_client import SERVICE_TOKEN_HEADER

tracer = trace.get_tracer("tracehop.users")


def require_service_token() -> None:
    """Raise a 401 ApiError unless the request carries the shared service token."""
    with tracer.start_as_current_span("auth_check") as span:
        presented = request.headers.get(SERVICE_TOKEN_HEADER, "")
        expected = current_app.config["SERVICE_TOKEN"]
        # compare_digest: the time taken must not tell an attacker how much of the token was right.
        granted = bool(presented) and hmac.compare_digest(presented.encode(), expected.encode())
        span.set_attribute("auth.method", "service_token")
        span.set_attribute("auth.token_present", bool(presented))
        span.set_attribute("auth.outcome", "granted" if granted else "denied")
        if not granted:
            span.set_status(trace.StatusCode.ERROR, "service token missing or wrong")
            raise ApiError(401, "unauthorized", f"a valid {SERVICE_TOKEN_HEADER} header is required")
