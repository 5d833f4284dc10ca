"""Prometheus metrics of the services: span export counters, exemplars, process metrics, Flask metrics.

They plug into services/telemetry from outside; nothing there imports this package.
"""
