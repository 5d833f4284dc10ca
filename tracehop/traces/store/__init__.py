"""Local trace store: an OTLP/HTTP receiver, SQLite storage and Jaeger's query API v3.

It stands in for Jaeger when no Docker engine runs. Services export to it exactly as they would to a
collector (`OTEL_EXPORTER_OTLP_ENDPOINT`), and tests, `make trace` and any other tool pointed at its query
port read traces back as from Jaeger 2.20 (the compose stack's version, with its in-memory storage):
- the routes `GET /api/v3/traces/{trace_id}` (hex or base64 id), `GET /api/v3/traces` (search),
  `GET /api/v3/trace-summaries`, `GET /api/v3/services`, `GET /api/v3/operations`; anything else under
  /api/ is Go's plain `404 page not found`;
- parameters under their camelCase names and their deprecated snake_case aliases, with Jaeger's defaults
  and checks (search depth 100, optional service, a window whose minimum is before its maximum,
  `query.attributes` with its special keys `error`, `span.kind`, `span.status`, `scope.name`,
  `scope.version`, `resource.<key>`);
- answers in OTLP/JSON with hex ids, integer enums, 64-bit integers as decimal strings, an empty status
  written as `{}`; a trace as one resourceSpans entry per received batch and resource, scopes and spans
  in arrival order; search results most recently received first; proto3 JSON elsewhere (`{}` for no
  services); errors as `text/plain` JSON bodies (`No traces found` for an unknown trace or no match).
tests/unit/jaeger_parity.py lists each of these answers with the Jaeger source file that gives it.

Known differences, kept on purpose (docs/full-stack.md lists them too):
- a search depth <= 0 is a 400 naming the parameter; Jaeger's memory store fails the search with a 500;
- no limit on the depth or on the number of traces kept (Jaeger's all-in-one keeps 100,000 traces and
  refuses a larger depth with a 500); retention.py prunes by age and span count instead;
- traces are answered as received: Jaeger's adjusters (sorting attributes and events, deduplicating spans,
  correcting clock skew) do not run, as with Jaeger's `rawTraces=true`; `rawTraces` is accepted and checked
  but changes nothing, and trace summaries are computed from the spans as received;
- a span received again with the same trace and span id replaces the earlier copy (an exporter's retry
  does not duplicate it); Jaeger keeps both until its deduplication adjuster drops exact copies;
- order where Jaeger's is a Go map's (traces first received in the same batch, services, operations) is
  deterministic here: first appearance, or sorted;
- spans are kept in SQLite across restarts (Jaeger's memory store starts empty).

Spans are stored as their serialized protobuf plus a few indexed columns; the resource and the
instrumentation scope are stored once each and referenced. A query rebuilds the exact OTLP it received.
Queries read on connections of their own beside the one writer (SQLite's WAL), so neither ingest nor a
retention prune holds them up; the query API answers without Flask, whose viewer app is built after the
start: a store restarted after a crash answers within ~0.25 s of CPU (docs/reliability.md).

Modules: otlp.py decodes what services export, database.py stores it in SQLite (indexing.py: the
attribute index for search by tag; span_filter.py: a search's span conditions; retention.py: pruning;
service_map.py: who calls whom), query_params.py parses the API's parameters as Jaeger does, api.py routes
and renders its answers (summaries.py: trace summaries; attribute_text.py: values as Jaeger compares
them), query_app.py serves the query port (API, and the trace viewer of tracehop/traces/viewer built when
first needed), server.py runs both HTTP servers, the housekeeping thread and the process.

Run: `python -m tracehop trace-store --otlp-port 4318 --query-port 16686 --db var/traces.sqlite3`.
"""
