"""The local trace store: OTLP decoding, SQLite storage, the Jaeger query API v3 and the viewer's server."""
