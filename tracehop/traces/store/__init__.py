"""Local trace store: an OTLP/HTTP receiver, SQLite storage and the Jaeger query API v3 subset we use.

It stands in for Jaeger when no Docker engine runs. Services export to it exactly as they would to a
collector (`OTEL_EXPORTER_OTLP_ENDPOINT`), and tests read traces back with `TraceQuery`, the same client
that talks to a real Jaeger 2.x. So its answers follow Jaeger's: OTLP/JSON with hex ids, integer enums and
64-bit integers as decimal strings, 404 for "no such trace" or "no match", `{"error": {...}}` bodies.

Spans are stored as their serialized protobuf plus a few indexed columns; the resource and the
instrumentation scope are stored once each and referenced. A query rebuilds the exact OTLP it received.

Modules: otlp.py decodes what services export, database.py stores it in SQLite (indexing.py: the
attribute index for search by tag; retention.py: pruning; service_map.py: who calls whom), api.py parses
query arguments and renders answers as OTLP/JSON, query_app.py serves the query port (API and the trace
viewer, tracehop/traces/viewer), server.py runs both HTTP servers and the process.

Run: `python -m tracehop trace-store --otlp-port 4318 --query-port 16686 --db var/traces.sqlite3`.
"""
