"""worker: the Celery app (celery_app.py) and its jobs (tasks.py)."""
