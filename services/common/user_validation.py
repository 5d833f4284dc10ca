"""Validation of a new user's JSON body, shared by the gateway (the public edge) and users."""

from __future__ import annotations

from typing import Any

from services.common.http_errors import ApiError

MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit for a forward path


def parse_new_user(body: Any) -> tuple[str, str]:
    """The (name, email) of a valid `{"name": str, "email": str}` body, else a 400 ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "expected a JSON object with 'name' and 'email'")
    unknown = sorted(set(body) - {"name", "email"})
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s): {', '.join(unknown)}")
    name, email = body.get("name"), body.get("email")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "invalid_name", "'name' must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise ApiError(400, "invalid_name", f"'name' must be at most {MAX_NAME_LENGTH} characters")
    if not isinstance(email, str) or not _looks_like_email(email):
        raise ApiError(400, "invalid_email", "'email' must be an address like someone@example.org")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ApiError(400, "invalid_email", f"'email' must be at most {MAX_EMAIL_LENGTH} characters")
    return name.strip(), email.strip()


def _looks_like_email(value: str) -> bool:
    local, at, domain = value.strip().rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in value.strip()))
