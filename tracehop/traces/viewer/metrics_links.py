"""Links from a trace to the local Prometheus: a service's request rate and p95 latency around the trace.

The PromQL is the Grafana overview dashboard's (infra/grafana/dashboards): HTTP services count
`http_requests_total` and time `http_request_duration_seconds`; the worker counts `tracehop_jobs_total`
and times `tracehop_job_duration_seconds`. Prometheus' scrape jobs are named after the services.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

WINDOW_MINUTES = 10  # the graph shows the trace in the middle of this range

_P95 = 'histogram_quantile(0.95, sum by (le) (rate({histogram}_bucket{{job="{job}"}}[1m])))'
_QUERIES = {
    "http": (
        'sum(rate(http_requests_total{{job="{job}"}}[1m]))',
        _P95.replace("{histogram}", "http_request_duration_seconds"),
    ),
    "jobs": (
        'sum(rate(tracehop_jobs_total{{job="{job}"}}[1m]))',
        _P95.replace("{histogram}", "tracehop_job_duration_seconds"),
    ),
}
SERVICE_METRICS = {"gateway": "http", "users": "http", "worker": "jobs"}


def prometheus_graph_url(prometheus_url: str, service: str, trace_start_ns: int) -> str | None:
    """A Prometheus graph of `service`'s rate and p95 around the trace; None for a service without metrics."""
    kind = SERVICE_METRICS.get(service)
    if kind is None:
        return None
    end = datetime.fromtimestamp(trace_start_ns / 1e9 + WINDOW_MINUTES * 30, tz=UTC)
    params: dict[str, str] = {}
    for index, template in enumerate(_QUERIES[kind]):
        params |= {
            f"g{index}.expr": template.format(job=service),
            f"g{index}.tab": "0",
            f"g{index}.range_input": f"{WINDOW_MINUTES}m",
            f"g{index}.end_input": end.strftime("%Y-%m-%d %H:%M:%S"),
        }
    return f"{prometheus_url.rstrip('/')}/graph?{urlencode(params)}"
