"""The Flask instrumentation's per-request attribute work, done once instead of twice.

Why this module exists: `python -m tracehop.bench.spancost` (callgrind and cProfile) shows the stock
Flask instrumentation (opentelemetry-instrumentation-flask 0.66b1, with its WSGI helpers) doing, for
every request, work whose result never differs within a process or within a request:

- `collect_request_attributes(environ)` runs twice on the same environ: once in the wrapped
  `wsgi_app` (for the HTTP server metrics) and once in `before_request` (for the SERVER span). Nothing
  between the two changes what it reads, as long as no WSGI middleware sits between the instrumented
  `wsgi_app` and Flask's own (checked below, per app): the second call can take a copy of the first.
- `collect_custom_request_headers_attributes` / `..._response_...` read the three
  `OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_*` variables from the environment on every request, build a
  header dict of the request's every `HTTP_*` key, and with no header to capture (our configuration)
  return {}. Here the variables are read once, at instrumentation (the project reads its configuration
  once); with none to capture the answer is {} straight away, with some the stock functions run.

No configuration of the instrumentation avoids either (its kwargs, hooks and excluded URLs do not touch
them), so the two helpers are replaced for the Flask instrumentation only: its module refers to the WSGI
helpers through its module global `otel_wsgi`, which `install()` points at a namespace that overrides
these three functions and hands every other name to the real module. The WSGI module itself, and any
other user of it, is untouched. The instrumentation's own code does everything else, unchanged.

The instrumentation's internals are not an API: `install()` refuses to run (RuntimeError, at start-up)
unless the installed instrumentation versions are exactly the ones this was checked against (the
pins in requirements.lock), and tests/unit/test_flask_request_attributes_differential.py runs the same
requests through the stock instrumentation and through this one and requires identical spans.
Only tracehop's setup installs it (services/telemetry/flask.py); `stock` stays OpenTelemetry's own.
"""

from __future__ import annotations

import os
import types
from collections.abc import Callable
from typing import Any

import opentelemetry.instrumentation.flask as otel_flask
import opentelemetry.instrumentation.wsgi as otel_wsgi
from opentelemetry.util.http import (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
)

from services.telemetry.checked_versions import require_checked_versions

# The distributions whose internals this module relies on, at the versions it was checked against.
CHECKED_VERSIONS = {
    "opentelemetry-instrumentation-flask": "0.66b1",
    "opentelemetry-instrumentation-wsgi": "0.66b1",
    "opentelemetry-util-http": "0.66b1",
}

# Where the first collection of a request's attributes waits for the second (not an HTTP_* key: the
# request-header capture reads those).
CACHE_KEY = "tracehop.otel_request_attributes"

_CAPTURE_VARIABLES = (
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE,
    OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS,
)


def check_versions() -> None:
    """Fail loudly when an installed instrumentation is not the version this module was checked against."""
    require_checked_versions("services/telemetry/flask_request_attributes.py", CHECKED_VERSIONS)


_UNSET: Any = object()


def collect_request_attributes_once(
    environ: dict[str, Any], mode: Any = _UNSET, *, sem_conv_opt_in_mode: Any = _UNSET
) -> dict:
    """The stock `collect_request_attributes`; the span's collection gets a copy of what the metrics'
    collection computed for the same environ and mode, since nothing it reads has changed in between.

    The two calls are told apart by how 0.66b1 makes them: the wrapped `wsgi_app` (first, for the
    metrics) passes the mode positionally, `before_request` (second, for the span) by keyword. So a
    cached copy is only ever taken by the span's call, and a first call always computes afresh (an
    environ reused for another request cannot hand on a stale copy).
    """
    if mode is not _UNSET:
        attributes = otel_wsgi.collect_request_attributes(environ, mode)
        # A copy: the caller adds the response's attributes to its dict (for the metrics).
        environ[CACHE_KEY] = (mode, dict(attributes))
        return attributes
    if sem_conv_opt_in_mode is _UNSET:
        sem_conv_opt_in_mode = otel_wsgi._StabilityMode.DEFAULT
    cached = environ.pop(CACHE_KEY, None)
    if cached is not None and cached[0] is sem_conv_opt_in_mode:
        return cached[1]
    return otel_wsgi.collect_request_attributes(environ, sem_conv_opt_in_mode)


def _no_custom_headers(_: object) -> dict:
    return {}


def wsgi_helpers() -> types.ModuleType:
    """The WSGI module as the Flask instrumentation should see it, with the capture variables as they
    are now: a module object holding the real module's names, three of them replaced."""
    namespace = types.ModuleType("tracehop_otel_wsgi")
    # The real module's names copied (a module-level __getattr__ alone costs ~3 µs per lookup: Python
    # tries the namespace's dict and raises AttributeError internally first), and __getattr__ for any
    # name the real module gains later.
    namespace.__dict__.update({k: v for k, v in vars(otel_wsgi).items() if not k.startswith("__")})
    namespace.__getattr__ = lambda name: getattr(otel_wsgi, name)  # type: ignore[method-assign]
    namespace.collect_request_attributes = collect_request_attributes_once  # type: ignore[attr-defined]
    capture = {name: os.environ.get(name) for name in _CAPTURE_VARIABLES}
    request: Callable[..., dict] = otel_wsgi.collect_custom_request_headers_attributes
    response: Callable[..., dict] = otel_wsgi.collect_custom_response_headers_attributes
    # With nothing to capture the stock functions always return {} (an empty capture list matches no
    # header, whatever the sanitize list says).
    if not capture[OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST]:
        request = _no_custom_headers
    if not capture[OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE]:
        response = _no_custom_headers
    namespace.collect_custom_request_headers_attributes = request  # type: ignore[attr-defined]
    namespace.collect_custom_response_headers_attributes = response  # type: ignore[attr-defined]
    return namespace


def middleware_inside(app: Any) -> bool:
    """Whether `app.wsgi_app` is no longer Flask's own method, i.e. a middleware was installed before the
    instrumentation: it could change the environ between the two collections."""
    own = getattr(type(app), "wsgi_app", None)
    return getattr(app.wsgi_app, "__func__", None) is not own


def install(app: Any) -> bool:
    """Point the Flask instrumentation at the cheaper helpers; call right before `instrument_app(app)`.
    Returns False (and leaves the instrumentation stock) when a middleware already wraps this app."""
    check_versions()
    if middleware_inside(app):
        uninstall()
        return False
    if not isinstance(otel_flask.otel_wsgi, types.ModuleType) or otel_flask.otel_wsgi.__name__ not in (
        otel_wsgi.__name__,
        "tracehop_otel_wsgi",
    ):
        raise RuntimeError("the Flask instrumentation no longer calls the WSGI helpers through otel_wsgi")
    otel_flask.otel_wsgi = wsgi_helpers()
    return True


def uninstall() -> None:
    """The Flask instrumentation's own helpers again (tests compare both in one process)."""
    otel_flask.otel_wsgi = otel_wsgi
