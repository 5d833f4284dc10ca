"""The OTLP/JSON exporter over real HTTP: endpoint, headers, compression, retries and drop counting are
the SDK exporter's, the trace store's own decoder accepts what it sends, and it posts through urllib3
only where requests would have sent the same request to the same place."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.exporter.http.transport._requests import RequestsHTTPTransport
from opentelemetry.exporter.http.transport._urllib3 import Urllib3HTTPTransport
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.metrics.span_export_metrics import SPANS_DROPPED, CountingSpanExporter
from services.telemetry import otlp_json_exporter
from services.telemetry.otlp_http_transport import exporter_transport
from services.telemetry.otlp_json_encoder import encode_spans_json
from services.telemetry.otlp_json_exporter import OTLPJsonSpanExporter
from tracehop.traces.store.otlp import decode_export_request, decompress


class Receiver(ThreadingHTTPServer):
    """Records each request; answers the statuses in `answers` first, then 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.answers: list[int] = []


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        status = self.server.answers.pop(0) if self.server.answers else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for name in ("TRACES_ENDPOINT", "TRACES_HEADERS", "TRACES_COMPRESSION", "TRACES_TIMEOUT", "COMPRESSION"):
        monkeypatch.delenv(f"OTEL_EXPORTER_OTLP_{name}", raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    yield server
    server.shutdown()
    server.server_close()


def _spans(count: int = 3):
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource({"service.name": "exporter-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("parent", attributes={"n": 1}):
        for index in range(count - 1):
            with tracer.start_as_current_span(f"child {index}") as span:
                span.add_event("log", {"level": "INFO"})
    return memory.get_finished_spans()


def test_sends_json_to_the_sdks_endpoint_with_env_headers_and_gzip(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=t1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    spans = _spans()
    assert OTLPJsonSpanExporter().export(spans) is SpanExportResult.SUCCESS
    [(path, headers, body)] = receiver.requests
    assert path == "/v1/traces"
    assert headers["content-type"] == "application/json"
    assert headers["content-encoding"] == "gzip"
    assert headers["x-tenant"] == "t1"
    request = decode_export_request(decompress(body, headers["content-encoding"]), headers["content-type"])
    names = [span.name for span in request.resource_spans[0].scope_spans[0].spans]
    assert names == [span.name for span in spans]


def test_configuration_is_the_sdk_exporters(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/custom/path")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "7")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "deflate")
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "authorization=Bearer%20x,content-type=text/plain"
    )
    ours, sdk = OTLPJsonSpanExporter(), OTLPSpanExporter()
    assert ours._client._endpoint == sdk._client._endpoint == "http://127.0.0.1:1/custom/path"
    assert ours._client._timeout == sdk._client._timeout == 7.0
    assert ours._client._compression is sdk._client._compression
    # Only the media type differs, even where the environment tries to set another one.
    assert {**sdk._client._headers, "content-type": "application/json"} == ours._client._headers
    assert ours._client._headers["authorization"] == "Bearer x"


def test_retries_a_503_then_succeeds(receiver: Receiver) -> None:
    receiver.answers = [503]
    assert OTLPJsonSpanExporter(timeout=10).export(_spans()) is SpanExportResult.SUCCESS
    assert len(receiver.requests) == 2
    assert receiver.requests[0][2] == receiver.requests[1][2]


def test_a_rejected_batch_counts_as_dropped(receiver: Receiver) -> None:
    receiver.answers = [400]
    before = SPANS_DROPPED.labels("export_failed")._value.get()
    exporter = CountingSpanExporter(OTLPJsonSpanExporter(timeout=2))
    assert exporter.export(_spans(4)) is SpanExportResult.FAILURE
    assert len(receiver.requests) == 1  # 400 is not retryable
    assert SPANS_DROPPED.labels("export_failed")._value.get() - before == 4


def test_the_exporter_pauses_for_requests_while_encoding(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses = []
    monkeypatch.setattr(otlp_json_exporter, "let_requests_run", lambda: pauses.append(1))
    spans = _spans(2 * otlp_json_exporter.PAUSE_EVERY_SPANS + 1)
    assert OTLPJsonSpanExporter().export(spans) is SpanExportResult.SUCCESS
    assert len(pauses) == 2  # after every PAUSE_EVERY_SPANS spans (tests/unit/test_export_pauses.py)
    [(_, _, body)] = receiver.requests
    assert body == encode_spans_json(spans)


def test_after_shutdown_nothing_is_sent(receiver: Receiver) -> None:
    exporter = OTLPJsonSpanExporter()
    exporter.shutdown()
    assert exporter.export(_spans()) is SpanExportResult.FAILURE
    assert receiver.requests == []


# ---------------------------------------------------------------- the HTTP client (otlp_http_transport.py)

PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> pytest.MonkeyPatch:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return monkeypatch


def test_posts_through_urllib3_to_a_plain_http_endpoint(receiver: Receiver, no_proxy_environment) -> None:
    exporter = OTLPJsonSpanExporter()
    assert isinstance(exporter._client._transport, Urllib3HTTPTransport)
    assert exporter.export(_spans()) is SpanExportResult.SUCCESS
    assert [path for path, _, _ in receiver.requests] == ["/v1/traces"]


def test_a_proxy_from_the_environment_is_still_used(receiver: Receiver, no_proxy_environment) -> None:
    # The receiver plays the proxy: requests sends it the absolute URL of the endpoint.
    no_proxy_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{receiver.server_port}")
    endpoint = "http://collector.invalid:4318/v1/traces"
    exporter = OTLPJsonSpanExporter(endpoint=endpoint)
    assert isinstance(exporter._client._transport, RequestsHTTPTransport)
    assert exporter.export(_spans()) is SpanExportResult.SUCCESS
    assert [path for path, _, _ in receiver.requests] == [endpoint]
    # ...unless NO_PROXY exempts the endpoint's host, as requests would read it.
    no_proxy_environment.setenv("NO_PROXY", "collector.invalid")
    assert isinstance(OTLPJsonSpanExporter(endpoint=endpoint)._client._transport, Urllib3HTTPTransport)


def test_requests_keeps_what_only_it_reads(no_proxy_environment, tmp_path) -> None:
    # https (requests reads CA bundles from the environment), a netrc login, a credential provider.
    assert isinstance(
        OTLPJsonSpanExporter(endpoint="https://collector.invalid/v1/traces")._client._transport,
        RequestsHTTPTransport,
    )
    netrc = tmp_path / "netrc"
    netrc.write_text("machine collector.invalid login me password secret\n")
    no_proxy_environment.setenv("NETRC", str(netrc))
    assert isinstance(
        OTLPJsonSpanExporter(endpoint="http://collector.invalid/v1/traces")._client._transport,
        RequestsHTTPTransport,
    )
    assert exporter_transport("http://other.invalid/v1/traces") is not None
    no_proxy_environment.setenv("OTEL_PYTHON_EXPORTER_OTLP_HTTP_TRACES_CREDENTIAL_PROVIDER", "some_provider")
    assert exporter_transport("http://other.invalid/v1/traces") is None
