"""Reading a request's JSON body so that no body, however malformed, can turn into a 500.

Flask's `request.get_json(silent=True)` catches only `ValueError`: a body of 10,000 nested brackets (well
under the 16 KiB size limit) makes the decoder raise `RecursionError`, which would escape as a 500. And a
chunked body over the size limit is cut at the limit without a word, so it must be checked for a 413.
"""

from __future__ import annotations

import json
from typing import Any

from flask import request

from services.web.http_errors import ApiError


def read_json_body() -> Any:
    """The decoded body, or a 400 ApiError; a body over MAX_CONTENT_LENGTH is werkzeug's 413."""
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if limit is not None and len(data) >= limit:
        # A body without Content-Length (chunked, as gunicorn passes it on) is read up to the limit and
        # silently cut there; one more read makes werkzeug raise its 413 if the body went on.
        request.stream.read(1)
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # ValueError covers bad UTF-8 and over-long integers too
        raise ApiError(400, "invalid_body", "the body is not valid JSON") from None
