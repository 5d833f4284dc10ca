"""The part a reader copies into their own Flask/Celery app (see the layout in README)."""
