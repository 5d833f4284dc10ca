"""Traces: the query client and model, trees, waterfalls, logs, the trace store and its browser viewer."""
