"""Running the stack: configuration and ports, supervisord config and client, processes, readiness,
Prometheus config, docker compose, the status view and the runner (`LocalStack`). Uses tracehop.traces.
"""
