"""Validation of a new user's JSON body, shared by the gateway (the public edge) and users."""

from __future__ import annotations

import unicodedata
from typing import Any

from services.web.http_errors import ApiError

MAX_NAME_LENGTH = 100
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit for a forward path

# Characters no name or address needs, refused rather than stored: controls (NUL included), line and
# paragraph separators (they split log lines in some readers), lone surrogates (a JSON `\ud800` escape
# decodes to one, and it cannot be encoded as UTF-8, so Redis and every log sink would fail on it), and
# the bidirectional embeddings/overrides/isolates used to make text display differently from what it is
# ("Trojan Source"). Right-to-left *marks* (U+200E, U+200F) stay allowed: real names need them.
_REFUSED_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def parse_new_user(body: Any) -> tuple[str, str]:
    """The (name, email) of a valid `{"name": str, "email": str}` body, else a 400 ApiError."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "expected a JSON object with 'name' and 'email'")
    unknown = sorted(set(body) - {"name", "email"})
    if unknown:
        raise ApiError(400, "invalid_body", f"unknown field(s): {', '.join(unknown)}")
    missing = [field for field in ("name", "email") if field not in body]
    if missing:
        # The code names the first missing field, as it would for a wrong value of that field.
        raise ApiError(400, f"invalid_{missing[0]}", f"missing field(s): {', '.join(missing)}")
    name, email = body["name"], body["email"]
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "invalid_name", "'name' must be a non-empty string")
    if len(name) > MAX_NAME_LENGTH:
        raise ApiError(400, "invalid_name", f"'name' must be at most {MAX_NAME_LENGTH} characters")
    if has_refused_character(name):
        raise ApiError(400, "invalid_name", "'name' contains a control or invisible formatting character")
    if not isinstance(email, str):
        raise ApiError(400, "invalid_email", "'email' must be a string, an address like someone@example.org")
    if not _looks_like_email(email):
        raise ApiError(400, "invalid_email", "'email' must be an address like someone@example.org")
    if len(email) > MAX_EMAIL_LENGTH:
        raise ApiError(400, "invalid_email", f"'email' must be at most {MAX_EMAIL_LENGTH} characters")
    if has_refused_character(email):
        raise ApiError(400, "invalid_email", "'email' contains a control or invisible formatting character")
    return name.strip(), email.strip()


def has_refused_character(text: str) -> bool:
    return any(c in _BIDI_CONTROLS or unicodedata.category(c) in _REFUSED_CATEGORIES for c in text)


def _looks_like_email(value: str) -> bool:
    local, at, domain = value.strip().rpartition("@")
    return bool(at and local and "." in domain and not any(c.isspace() for c in value.strip()))
