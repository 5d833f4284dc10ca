"""The part of tracehop you copy into your own Flask/Celery app to get ONE trace across it, and nothing else.

Which files give which result (each lists what it needs from the others):

- One trace across Flask services: setup.py (tracer provider, exporter, `instrument()`) + lean_tracer.py
  (the SDK's provider with cheaper span creation, proven equal to it) + export_retry.py
  (a batch retried through a backend outage, a queue sized for one), flask.py
  (SERVER spans, `traceresponse`, access log), propagation.py + tracestate.py (W3C `tracestate` kept
  whole). Call `setup_tracing()` after the fork: gunicorn_hooks.py has the `post_fork`/`worker_exit` pair.
- ... continued through Celery jobs: celery.py (`instrument_celery()` in the worker's Celery module,
  `instrument_celery_producer()` in the app that sends tasks).
- Logs that carry the trace: logs.py (loguru JSON lines with trace_id/span_id, stdlib logging routed in,
  log lines as span events) + safe_attributes.py (no credentials, masked e-mail addresses).
- Spans for your own functions: traced.py (`@traced`) + safe_attributes.py.
- Export at a fifth of the SDK's protobuf encoding cost: otlp_json_exporter.py + otlp_json_encoder.py +
  otlp_http_transport.py (setup.py uses them for `OTEL_EXPORTER_OTLP_PROTOCOL=http/json`, tracehop's
  default; the standard library and the SDK's own packages only).

Configuration comes from the environment (`OTEL_*` as OpenTelemetry defines them, the rest through
services/web/settings.py: copy it too, or replace its few calls with your own). Prometheus metrics,
exemplars and the demo switches live outside (services/metrics, services/demo) and plug in through
parameters: `setup_tracing(wrap_exporter=…)`, `instrument_flask_app(on_response=…)`, `CeleryHooks`.
"""
