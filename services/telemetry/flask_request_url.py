"""`request.url` for the Flask instrumentation's excluded-URL check, the same string for less work.

Why this module exists: the stock Flask instrumentation (opentelemetry-instrumentation-flask 0.66b1)
decides whether a request is excluded (our probes: `/healthz`, `/readyz`, `/metrics`) by searching its
regular expressions in `flask.request.url`, on every request, traced or not. Werkzeug (3.1.9) builds
that property once per request with `get_current_url`, which joins scheme, host, root path, path and
query (each percent-quoted) and then runs the whole string through `uri_to_iri`: a `urlsplit`, three
partial unquotes, the host's IDNA decoding and a `urlunsplit`. That last step is about 60% of the
property's cost (~20 µs per request in a quick timing) and, for an ordinary URL — lower-case ASCII host,
a canonical port, nothing percent-encoded — gives back exactly the string it was handed. Nothing in
tracehop reads `request.url` but the instrumentation.

So the app's request class gets a `url` that builds the same string as Werkzeug's, with `uri_to_iri`
skipped only when the quoted string is of that plain form (`_PLAIN_URL`, below, which says why each
part of it makes `uri_to_iri` an identity); any other URL goes through `uri_to_iri` as before. The value
is the same for every request, so the instrumentation's decision, every span and every attribute are
too. tests/unit/test_flask_request_url_differential.py compares it with Werkzeug's property for
hypothesis-generated environs (unicode, percent escapes, IDNA hosts, IPv6, odd ports, upper case, root
paths) and runs requests through the instrumented app both ways.

Werkzeug's internals are not an API: `install()` refuses to run (RuntimeError, at start-up) beside any
Werkzeug but the checked version (requirements.lock). Only tracehop's setup installs it
(services/telemetry/flask.py, TRACEHOP_LEAN_INSTRUMENTATION); `stock` stays Werkzeug's own.
"""

from __future__ import annotations

import inspect
import re
from typing import Any
from urllib.parse import quote

from werkzeug.sansio.request import Request as SansioRequest
from werkzeug.urls import uri_to_iri
from werkzeug.utils import cached_property

from services.telemetry.checked_versions import require_checked_versions

CHECKED_VERSIONS = {"werkzeug": "3.1.9"}

# What get_current_url leaves unquoted: https://url.spec.whatwg.org/#url-path-segment-string, plus percent
# for what is already quoted (and `?` in the query).
_PATH_SAFE = "!$&'()*+,/:;=@%"
_QUERY_SAFE = "!$&'()*+,/:;=?@%"

# A URL (as get_current_url has quoted it) that `uri_to_iri` returns unchanged:
# - scheme: `urlsplit` lower-cases it; this one is lower case already, and of scheme characters only;
# - host: `uri_to_iri` replaces the network location by `hostname` (lower-cased, IDNA-decoded) and
#   `port` (as an int): lower-case labels of letters, digits and hyphens with no "xn--" anywhere (the
#   IDNA codec then decodes it as plain ASCII), no user info, no IPv6 brackets, and a port without
#   leading zeros below 60000 (so `int` gives it back and never raises);
# - the rest: `/` and printable ASCII without `%` (nothing to unquote, nothing `urlsplit` strips) and
#   without `#` (no fragment); `?` may start the query (get_current_url adds it only before a
#   non-empty query; a `?` inside the path would have been quoted).
_PLAIN_URL = re.compile(
    r"[a-z][a-z0-9+.-]*://"
    r"(?![^/]*xn--)[a-z0-9-]+(?:\.[a-z0-9-]+)*"
    r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}))?"
    r"/[!\"$&-~]*"
)


def check_versions() -> None:
    """Fail loudly when the installed Werkzeug is not the version this module was checked against."""
    require_checked_versions("services/telemetry/flask_request_url.py", CHECKED_VERSIONS)


def current_url(scheme: str, host: str, root_path: str, path: str, query_string: bytes) -> str:
    """Werkzeug 3.1.9's `get_current_url(scheme, host, root_path, path, query_string)`, without
    `uri_to_iri` where that would return its input unchanged."""
    url = f"{scheme}://{host}{quote(root_path.rstrip('/'), safe=_PATH_SAFE)}/"
    url += quote(path.lstrip("/"), safe=_PATH_SAFE)
    if query_string:
        url += "?" + quote(query_string, safe=_QUERY_SAFE)
    if _PLAIN_URL.fullmatch(url):
        return url
    return uri_to_iri(url)


def _url(self: Any) -> str:
    """The full request URL with the scheme, host, root path, path, and query string."""
    return current_url(self.scheme, self.host, self.root_path, self.path, self.query_string)


def request_class(base: type) -> type:
    """`base` with the cheaper `url`, or `base` itself when it (or a class between it and Werkzeug's)
    defines `url` in its own way."""
    check_versions()
    if inspect.getattr_static(base, "url") is not inspect.getattr_static(SansioRequest, "url"):
        return base
    return type(base.__name__, (base,), {"url": cached_property(_url, name="url"), "__module__": __name__})


def install(app: Any) -> bool:
    """Give the app's requests the cheaper `url`; False (and the class left alone) when it has its own."""
    cheaper = request_class(app.request_class)
    app.request_class = cheaper
    return cheaper.__module__ == __name__
