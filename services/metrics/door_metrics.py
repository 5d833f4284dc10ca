"""What the public door did with connections: how many are open, and why it closed the ones it refused.

Written by the gateway's worker (services/web/public_door.py) in every gunicorn process; prometheus_client's
multiprocess mode sums them on /metrics. An attack by slow clients shows as a rising `…_open` and as
`…_closed_total{reason="header_timeout"|"body_timeout"}`; a full process as `reason="over_capacity"`.
"""

from prometheus_client import Counter, Gauge

OPEN_CONNECTIONS = Gauge(
    "tracehop_door_connections_open",
    "Client connections the gateway holds open now (summed over its live processes).",
    multiprocess_mode="livesum",
)
REFUSED_CONNECTIONS = Counter(
    "tracehop_door_connections_refused_total",
    "Client connections the gateway closed because a limit was hit (header or body too slow, process full).",
    ["reason"],
)
