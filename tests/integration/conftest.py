"""Integration tests: real processes of an embedded local stack (see stack.py).

The fixtures are pytest plugins registered in tests/conftest.py, one module per thing they provide:
stack_fixtures.py (the session's stack, Prometheus, a private stack's programs) and amqp_fixtures.py
(a private RabbitMQ broker, a stack per broker). Every test here carries the `integration` marker.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)
