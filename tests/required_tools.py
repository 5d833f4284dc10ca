"""One rule for the tools a test needs from outside Python (Prometheus, promtool, RabbitMQ, wrk, the audit's
advisory data): without the tool the test skips and says why, unless TRACEHOP_REQUIRE_<TOOL>=1 says it must
be there, and then it fails. CI (.ci/run) sets TRACEHOP_REQUIRE_<TOOL>=1 for every tool it installs.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def required(tool: str) -> bool:
    """TRACEHOP_REQUIRE_<TOOL>=1: this run must have the tool (CI sets it for what it installs)."""
    return os.environ.get(f"TRACEHOP_REQUIRE_{tool.upper()}") == "1"


def skip_or_fail(tool: str, message: str) -> NoReturn:
    """Skip, saying why, unless the tool is required: then fail with the same message."""
    variable = f"TRACEHOP_REQUIRE_{tool.upper()}"
    if required(tool):
        pytest.fail(f"{message} [{variable}=1]")
    pytest.skip(f"{message} (set {variable}=1 to make this a failure)")
