"""Which HTTP client posts the spans: urllib3 where that changes nothing but the cost, else requests.

The SDK's OTLP/HTTP exporters post through a `requests.Session`. For every POST, requests looks the
endpoint up in the proxy environment variables (a walk through all of `os.environ`), checks `~/.netrc`
and merges settings: about 1.8 ms of CPU per POST on this machine, against 1.1 ms through urllib3 — the
library requests itself sends with (`make export-cost`, docs/performance.md). The SDK ships a urllib3
transport for its exporters (opentelemetry-exporter-http-transport); `exporter_transport()` picks it
when the exporter would behave exactly as with requests, which it decides once, from what requests
would find:

- the endpoint is plain `http://` (with https, requests also reads REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE);
- no proxy applies to it (HTTP_PROXY/ALL_PROXY/NO_PROXY, as requests reads them);
- `~/.netrc` (or NETRC) holds no login for its host;
- no credential provider (OTEL_PYTHON_EXPORTER_OTLP_HTTP[_TRACES]_CREDENTIAL_PROVIDER) supplies a session.

Otherwise it returns None and the exporter builds its requests session as the SDK does.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from opentelemetry.exporter.http.transport._base import BaseHTTPTransport
from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
from opentelemetry.sdk.environment_variables import (
    _OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER,
    _OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER,
)
from requests.utils import get_environ_proxies, get_netrc_auth


def exporter_transport(endpoint: str) -> BaseHTTPTransport | None:
    """A urllib3 transport for `endpoint` when it changes nothing but the cost (module docstring)."""
    if urlsplit(endpoint).scheme != "http":
        return None
    for name in (
        _OTEL_PYTHON_EXPORTER_OTLP_HTTP_CREDENTIAL_PROVIDER,
        _OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER,
    ):
        if os.environ.get(name):
            return None
    if get_environ_proxies(endpoint) or get_netrc_auth(endpoint):
        return None
    return Urllib3HTTPTransport()
