"""The requests instrumentation's per-call URL work, done once where it repeats or cannot change anything.

Why this module exists: `python -m tracehop.bench.spancost --profile` shows the stock requests
instrumentation (opentelemetry-instrumentation-requests 0.66b1, with opentelemetry-util-http's helpers),
for every outgoing call (gateway → users, worker → users), doing work whose result is known before it
starts:

- `urlparse(url)`'s `hostname` and `port` are properties that split the network location again on each
  read: the wrapper reads `hostname` five times and `port` four times per call (stable HTTP conventions).
  Here `urlparse` gives the same result, with each of the two computed on its first read and kept (a
  bad port raises the same ValueError on every read, as the stock property does).
- `redact_url(url)` parses the URL twice (once for credentials, once for sensitive query parameters)
  and returns it unchanged unless its network location holds `@` or it has a query: a URL with neither
  `@` nor `?` anywhere is returned at once, any other goes through the stock function.
- `sanitize_method(method)` reads `OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS` from the
  environment on every call: read once, at installation (the project reads its configuration once).
- `detect_synthetic_user_agent(user_agent)` lower-cases the caller's User-Agent and searches it for
  eleven patterns on every call; a client sends the same User-Agent on every call, so the answer is
  kept per User-Agent (a bounded table).

No instrumentor option avoids them (hooks run in addition, not instead), so the instrumentation module's
globals with these four names, which its wrapper looks up on every call, are pointed at the functions
below; the wrapper's own code does everything else, unchanged.

The internals are not an API: `install()` refuses to run (RuntimeError, at start-up) unless the installed
instrumentation versions are exactly the ones this was checked against (requirements.lock), and
tests/unit/test_requests_client_attributes_differential.py sends the same calls (hypothesis-generated
URLs with credentials, queries, odd ports, IPv6 hosts, user agents, methods) through the stock
instrumentation and through this one to a real HTTP server, in every HTTP semantic-convention mode, and
requires identical spans. Only tracehop's setup installs it (services/telemetry/setup.py,
`instrument_requests`; TRACEHOP_LEAN_INSTRUMENTATION); `stock` stays OpenTelemetry's own.
"""

from __future__ import annotations

import functools
import os
from urllib.parse import ParseResult, urlparse

import opentelemetry.instrumentation.requests as otel_requests
import opentelemetry.util.http as otel_http

from services.telemetry.checked_versions import require_checked_versions

CHECKED_VERSIONS = {
    "opentelemetry-instrumentation-requests": "0.66b1",
    "opentelemetry-util-http": "0.66b1",
}

# The user agents whose answer is kept: a service sends one or two; a caller that varies it per call
# (it should not) only refills the table.
_USER_AGENTS_KEPT = 64


class _ParsedUrl(ParseResult):
    """urlparse's result with `hostname` and `port` kept after their first read (a subclass without
    __slots__ has the instance dict `cached_property` needs; everything else is ParseResult's)."""

    hostname = functools.cached_property(ParseResult.hostname.fget)  # type: ignore[assignment]
    port = functools.cached_property(ParseResult.port.fget)  # type: ignore[assignment]


def parse_url(url: str) -> ParseResult:
    """`urllib.parse.urlparse(url)`, with `hostname` and `port` computed once."""
    return _ParsedUrl(*urlparse(url))


def redact_url(url: str) -> str:
    """The stock `redact_url`: credentials need an `@`, query parameters a `?`; without either, the stock
    function returns the URL as it is."""
    if "@" not in url and "?" not in url:
        return url
    return otel_http.redact_url(url)


def sanitize_method_reader():
    """The stock `sanitize_method` with the capture-all-methods variable as it is now."""
    if os.environ.get(otel_http.OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS):

        def sanitize_method(method: str | None) -> str | None:
            return None if method is None else method.upper()

        return sanitize_method
    known = frozenset(
        ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
    )

    def sanitize_method(method: str | None) -> str | None:
        if method is None:
            return None
        method = method.upper()
        return method if method in known else "_OTHER"

    return sanitize_method


def synthetic_user_agent_detector():
    """The stock `detect_synthetic_user_agent`, its answer kept per User-Agent."""
    answers: dict[str | None, str | None] = {}

    def detect_synthetic_user_agent(user_agent: str | None) -> str | None:
        # A str or None: the wrapper passes normalize_user_agent's answer.
        try:
            return answers[user_agent]
        except KeyError:
            answer = otel_http.detect_synthetic_user_agent(user_agent)
        if len(answers) >= _USER_AGENTS_KEPT:
            answers.clear()
        answers[user_agent] = answer
        return answer

    return detect_synthetic_user_agent


# The instrumentation module's names we replace, with the functions it imported under them.
STOCK = {
    "urlparse": urlparse,
    "redact_url": otel_http.redact_url,
    "sanitize_method": otel_http.sanitize_method,
    "detect_synthetic_user_agent": otel_http.detect_synthetic_user_agent,
}


def check_versions() -> None:
    """Fail loudly when an installed instrumentation is not the version this module was checked against."""
    require_checked_versions("services/telemetry/requests_client_attributes.py", CHECKED_VERSIONS)


def install() -> None:
    """Point the requests instrumentation's wrapper at the cheaper functions (before or after
    `RequestsInstrumentor().instrument()`: it looks them up on every call)."""
    check_versions()
    for name, stock in STOCK.items():
        current = getattr(otel_requests, name, None)
        if current is not stock and getattr(current, "__module__", None) != __name__:
            raise RuntimeError(f"the requests instrumentation no longer calls {stock.__module__}.{name}")
    otel_requests.urlparse = parse_url
    otel_requests.redact_url = redact_url
    otel_requests.sanitize_method = sanitize_method_reader()
    otel_requests.detect_synthetic_user_agent = synthetic_user_agent_detector()


def uninstall() -> None:
    """The instrumentation's own functions again (tests compare both in one process)."""
    for name, stock in STOCK.items():
        setattr(otel_requests, name, stock)
