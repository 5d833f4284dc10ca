"""gateway: the public Flask API; calls users over HTTP and queues Celery jobs."""

from services.gateway.app import create_app

__all__ = ["create_app"]
