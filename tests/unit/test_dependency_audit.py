"""How pip-audit's answers are read: a package that could not be looked up is never a pass."""

from __future__ import annotations

import json

from tools.dependency_audit import UNAVAILABLE, parse_report


def report(*dependencies: dict) -> str:
    return json.dumps({"dependencies": list(dependencies), "fixes": []})


def test_every_package_checked_and_clean_passes():
    result = parse_report(report({"name": "flask", "version": "3.1.3", "vulns": []}), "", 0)
    assert result.exit_status() == 0 and "1 locked packages checked" in result.message("pypi")


def test_a_vulnerable_package_fails_naming_the_fix():
    vuln = {"id": "GHSA-xxxx", "fix_versions": ["2.0.1"], "aliases": [], "description": ""}
    result = parse_report(report({"name": "lib", "version": "2.0.0", "vulns": [vuln]}), "", 1)
    assert result.exit_status() == 1
    assert "VULNERABLE lib 2.0.0: GHSA-xxxx (fixed in: 2.0.1)" in result.message("pypi")


def test_a_package_pip_audit_skipped_is_not_a_pass():
    # What pip-audit answers (exit status 0, "No known vulnerabilities found") when PyPI's JSON API is
    # out of reach, e.g. behind a mirror that serves only the simple index.
    skipped = {
        "name": "six",
        "skip_reason": "Dependency not found on PyPI and could not be audited: six (1.16.0)",
    }
    result = parse_report(report({"name": "flask", "version": "3.1.3", "vulns": []}, skipped), "", 0)
    assert result.exit_status() == UNAVAILABLE
    message = result.message("pypi")
    assert message.startswith("AUDIT INCOMPLETE") and "pypi.org" in message and "six" in message


def test_pip_audit_failing_outright_says_why():
    stderr = "Traceback ...\nrequests.exceptions.ConnectionError: Failed to resolve 'api.osv.dev'\n"
    result = parse_report("", stderr, 1)
    assert result.exit_status() == UNAVAILABLE
    assert "api.osv.dev" in result.message("osv") and "ConnectionError" in result.message("osv")
