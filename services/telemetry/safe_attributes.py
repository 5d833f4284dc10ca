"""What may become a span attribute: values rendered cheaply and safely, secrets left out, e-mails masked.

Span attributes leave the process (to the trace backend, to whoever can read it) and cost CPU twice: once
to collect, once to encode. So both `@traced` (a function's arguments) and the log-event bridge (a log
call's fields) pass every value through here:

- numbers and booleans stay as they are (the backend can filter and aggregate them);
- everything else becomes a bounded string: `reprlib` limits the work spent on big containers, and the
  result is cut to MAX_LENGTH characters;
- a name that looks like a credential (password, token, secret, authorization, ...) is never recorded;
- anything that looks like an e-mail address is masked to its first character and domain
  (`ada@example.org` -> `a***@example.org`), wherever it appears in the text (inside a repr too).
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

from opentelemetry.util.types import AttributeValue

MAX_LENGTH = 256

# Substrings of argument and field names whose values must never leave the process. Matching is
# case-insensitive and by substring, so `api_token` and `X-Authorization` are caught too; a false
# positive only costs one attribute.
SECRET_NAME_PARTS = (
    "password",
    "passwd",
    "secret",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "cookie",
    "credential",
    "private_key",
)

# The local part of anything shaped like `local@domain`. Deliberately loose on the domain side: a
# truncated repr may have cut the domain ("ada@exa...org"), and the local part must go all the same.
_EMAIL = re.compile(r"([A-Za-z0-9_%+-])[A-Za-z0-9._%+-]*@(?=[A-Za-z0-9-])")

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# Bounded repr: at most a few items per container, two levels deep, long strings cut in the middle.
_repr = reprlib.Repr()
_repr.maxlevel = 2
_repr.maxstring = _repr.maxother = _repr.maxlong = MAX_LENGTH
_repr.maxlist = _repr.maxtuple = _repr.maxset = _repr.maxdict = 10


def is_secret_name(name: str) -> bool:
    """True when a value stored under `name` must never be recorded."""
    lowered = name.lower()
    return any(part in lowered for part in SECRET_NAME_PARTS)


def mask_emails(text: str) -> str:
    """`ada@example.org` -> `a***@example.org`, everywhere in `text`."""
    if "@" not in text:  # the common case costs one scan, no regex
        return text
    return _EMAIL.sub(r"\1***@", text)


def safe_value(value: Any) -> AttributeValue:
    """The value as an OpenTelemetry attribute: a bool, int or float as is, anything else a short string."""
    # bool before int: bool is a subclass of int, and True must stay True.
    if isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        # OTLP integers are 64-bit; a bigger one would fail the whole export batch.
        return value if _INT64_MIN <= value <= _INT64_MAX else safe_text(str(value))
    if isinstance(value, str):
        return safe_text(value)
    try:
        text = _repr.repr(value)
    except Exception:  # a broken __repr__ must not break the traced call
        text = f"<{type(value).__qualname__}>"
    return safe_text(text)


def safe_text(text: str) -> str:
    """Masked, then cut to MAX_LENGTH characters.

    Masking before the final cut means a cut never leaves a readable half address; the generous first
    cut only bounds the regex's work on a huge string (what it drops is dropped by the final cut anyway).
    """
    if len(text) <= MAX_LENGTH:
        return mask_emails(text)
    return mask_emails(text[: 4 * MAX_LENGTH])[: MAX_LENGTH - 1] + "…"
