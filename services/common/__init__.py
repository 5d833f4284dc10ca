"""Telemetry, logging and HTTP conventions shared by the three tracehop services.

Nothing here knows about a particular service: each service calls these functions with its own name.
"""
