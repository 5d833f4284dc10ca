"""The browser trace viewer the trace store serves on its query port (http://127.0.0.1:16686).

Jaeger's vocabulary and layout (search, trace waterfall, span details, service map), Datasette's shape:
pages rendered on the server from Jinja templates over the same OTLP JSON the query API answers, the query
in the URL, a JSON twin for the search and the map, and a little plain JavaScript (static/viewer.js) for
collapsing subtrees and opening span details. Nothing on a page comes from another origin.

- `app.py`: the Flask blueprint (routes, security headers);
- `search_form.py`: the search as URL parameters <-> the store's TraceSearch;
- `trace_page.py`, `summaries.py`, `service_map_view.py`: what the templates show;
- `formatting.py`, `metrics_links.py`: durations and times, links to Prometheus.
"""
