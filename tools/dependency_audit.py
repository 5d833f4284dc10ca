"""Audit the locked dependencies against published advisories (pip-audit), and say so when it could not.

    python -m tools.dependency_audit [--lock requirements.lock] [--service pypi|osv]

Exit status: 0 every package was checked and none has a known vulnerability; 1 some have (listed, with
the versions that fix them); 3 the advisory data could not be had for some or all packages (no network,
a mirror without PyPI's JSON API, the advisory service down): the audit did NOT happen, whatever pip-audit
itself prints. That last case matters: pip-audit reports a package it could not look up as "skipped" and
still says "No known vulnerabilities found" with exit status 0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

UNAVAILABLE = 3
ADVISORY_SOURCES = {
    "pypi": "pypi.org (its JSON API: a mirror of the simple index is not enough)",
    "osv": "api.osv.dev",
}


@dataclass(frozen=True)
class Vulnerable:
    name: str
    version: str
    ids: list[str]
    fixed_in: list[str]


@dataclass
class AuditResult:
    audited: int = 0
    vulnerable: list[Vulnerable] = field(default_factory=list)
    unaudited: list[str] = field(default_factory=list)  # "name version: reason"
    error: str = ""  # pip-audit itself failed (no report at all)

    @property
    def complete(self) -> bool:
        return not self.error and not self.unaudited

    def exit_status(self) -> int:
        if self.vulnerable:
            return 1
        return 0 if self.complete else UNAVAILABLE

    def message(self, service: str) -> str:
        lines = []
        for item in self.vulnerable:
            fixes = ", ".join(item.fixed_in) or "no fixed release yet"
            lines.append(f"VULNERABLE {item.name} {item.version}: {', '.join(item.ids)} (fixed in: {fixes})")
        if not self.complete:
            missing = len(self.unaudited) if not self.error else "all"
            lines.append(
                f"AUDIT INCOMPLETE: the advisory data of {missing} package(s) could not be had from the "
                f"'{service}' service, so they were not checked. Needs HTTPS to {ADVISORY_SOURCES[service]}."
            )
            lines += [f"  not checked: {entry}" for entry in self.unaudited[:10]]
            if len(self.unaudited) > 10:
                lines.append(f"  ... and {len(self.unaudited) - 10} more")
            if self.error:
                lines.append(f"  pip-audit: {self.error}")
        if not lines:
            lines.append(f"{self.audited} locked packages checked: no known vulnerability")
        return "\n".join(lines)


def parse_report(stdout: str, stderr: str, returncode: int) -> AuditResult:
    """pip-audit's JSON report (or its failure) as an AuditResult."""
    try:
        report = json.loads(stdout)
    except ValueError:
        last = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or [
            f"exit status {returncode}"
        ]
        return AuditResult(error=last[0][:300])
    result = AuditResult()
    for dependency in report.get("dependencies", []):
        name, version = dependency.get("name", "?"), dependency.get("version", "")
        if "skip_reason" in dependency:
            result.unaudited.append(f"{name}: {dependency['skip_reason']}")
            continue
        result.audited += 1
        vulns = dependency.get("vulns") or []
        if vulns:
            result.vulnerable.append(
                Vulnerable(
                    name,
                    version,
                    [v.get("id", "?") for v in vulns],
                    sorted({fix for v in vulns for fix in v.get("fix_versions", [])}),
                )
            )
    return result


def run_audit(lock: Path, service: str = "pypi", timeout_s: int = 15) -> AuditResult:
    command = [
        sys.executable,
        *("-m", "pip_audit", "--requirement", str(lock)),
        # The lock pins every package exactly: audit exactly those, without resolving anything again.
        *("--no-deps", "--disable-pip", "--progress-spinner", "off", "--format", "json"),
        *("--vulnerability-service", service, "--timeout", str(timeout_s)),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    return parse_report(completed.stdout, completed.stderr, completed.returncode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.dependency_audit", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--lock", type=Path, default=Path("requirements.lock"))
    parser.add_argument("--service", choices=("pypi", "osv"), default="pypi")
    args = parser.parse_args(argv)
    result = run_audit(args.lock, args.service)
    print(result.message(args.service))
    return result.exit_status()


if __name__ == "__main__":
    sys.exit(main())
