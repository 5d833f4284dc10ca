"""The `Idempotency-Key` request header (the IETF httpapi draft's convention, as Stripe and others use it).

A client sends a unique key (a UUID is the usual choice) with a request that creates something; when it
sends the same request again with the same key — after a timeout or a dropped connection — the server
answers with what the first request created instead of creating it twice.
"""

from __future__ import annotations

import re

from services.web.http_errors import ApiError

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# Printable ASCII without spaces: the key ends up inside Redis key names and log lines.
_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")


def parse_idempotency_key(raw: str | None) -> str | None:
    """The key, None when the header is absent, or a 400 ApiError when it is malformed."""
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':  # the draft's structured-field string form
        key = key[1:-1]
    if not _KEY.fullmatch(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"{IDEMPOTENCY_HEADER} must be 1-{MAX_KEY_LENGTH} printable ASCII characters without spaces",
        )
    return key
