"""users: internal Flask service that stores users in Redis."""

from services.users.app import create_app

__all__ = ["create_app"]
