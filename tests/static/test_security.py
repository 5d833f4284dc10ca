"""Security checks of what we ship, beyond the compose file (test_compose.py covers ports bound to
127.0.0.1, non-root containers and committed secrets): known vulnerabilities in the locked dependencies.

The audit needs the advisory data from the network (PyPI's JSON API). Where that data cannot be had it is
skipped with the reason, never passed silently; TRACEHOP_REQUIRE_AUDIT=1 (CI) makes that a failure
(tests/required_tools.py: the one rule for what a test needs from outside).
"""

from __future__ import annotations

from tests.conftest import REPO_ROOT
from tests.required_tools import skip_or_fail
from tools.dependency_audit import run_audit


def test_locked_dependencies_have_no_known_vulnerability():
    result = run_audit(REPO_ROOT / "requirements.lock")
    message = result.message("pypi")
    assert not result.vulnerable, message
    if not result.complete:
        skip_or_fail("audit", message)
