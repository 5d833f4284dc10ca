"""The shared tracer setup: resource attributes, the cached resource hash, the exporter choice."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.resources import Resource

from services.telemetry.setup import HashCachedResource, build_resource


def test_resource_defaults_and_environment_override(monkeypatch):
    monkeypatch.setenv("TRACEHOP_ENV", "staging")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,team=obs")
    resource = build_resource("gateway")
    assert resource.attributes["service.name"] == "gateway"
    assert resource.attributes["service.version"]
    assert resource.attributes["process.pid"] == os.getpid()
    # OTEL_RESOURCE_ATTRIBUTES wins over our default, as OpenTelemetry's configuration rules say.
    assert resource.attributes["deployment.environment"] == "prod"
    assert resource.attributes["team"] == "obs"


def test_otel_service_name_overrides_the_default(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edge")
    assert build_resource("gateway").attributes["service.name"] == "edge"


def test_cached_hash_equals_the_sdk_hash_and_is_not_recomputed(monkeypatch):
    resource = build_resource("users")
    plain = Resource(resource.attributes, resource.schema_url)
    assert isinstance(resource, HashCachedResource)
    assert hash(resource) == hash(plain) and resource == plain

    def fail(*_args, **_kwargs):
        raise AssertionError("the hash was computed again")

    monkeypatch.setattr("opentelemetry.sdk.resources.dumps", fail)
    hash(resource)  # must not serialise the attributes again
    try:
        hash(plain)
    except AssertionError:
        pass
    else:
        raise AssertionError(
            "the plain Resource should have recomputed its hash (test cannot tell otherwise)"
        )


def _clear_protocol(monkeypatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_PROTOCOL", raising=False)


def test_the_protocol_setting_chooses_the_exporter(monkeypatch):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from services.telemetry.otlp_json_exporter import OTLPJsonSpanExporter
    from services.telemetry.setup import otlp_span_exporter

    _clear_protocol(monkeypatch)
    assert type(otlp_span_exporter()) is OTLPJsonSpanExporter  # our default
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    assert type(otlp_span_exporter()) is OTLPSpanExporter
    # The signal-specific variable wins over the general one, as in the SDK.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    assert type(otlp_span_exporter()) is OTLPJsonSpanExporter


def test_an_unsupported_protocol_is_a_clear_error(monkeypatch):
    import pytest

    from services.telemetry.setup import otlp_span_exporter

    _clear_protocol(monkeypatch)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL='grpc' is not supported"):
        otlp_span_exporter()


@pytest.mark.parametrize(
    ("environment", "provider"),
    [
        ({}, "LeanTracerProvider"),
        ({"TRACEHOP_LEAN_TRACER": "false"}, "TracerProvider"),
        ({"TRACEHOP_TRACING_SETUP": "stock"}, "TracerProvider"),  # stock stays the SDK, as documented
    ],
)
def test_tracehop_setup_creates_spans_with_the_lean_provider(environment, provider):
    # setup_tracing installs the process-wide provider, which this test process already has: a fresh one.
    script = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "from services.telemetry.setup import setup_tracing\n"
        "exporter = InMemorySpanExporter()\n"
        "setup_tracing('lean-check', exporter, register_atexit=False)\n"
        "provider = trace.get_tracer_provider()\n"
        "trace.get_tracer('t').start_span('s').end()\n"
        "provider.force_flush()\n"
        "print(type(provider).__name__, [span.name for span in exporter.get_finished_spans()])\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OTEL_", "TRACEHOP_"))}
    done = subprocess.run(
        [sys.executable, "-c", script], env={**env, **environment}, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [provider, "['s']"]
