"""services/telemetry is the part a reader copies: importing it must load no metrics and no demo code.

Each module is imported in a fresh interpreter (this test process has long loaded everything), and the
modules it brought in are compared against what belongs outside the package.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import services.telemetry

REPO_ROOT = Path(__file__).resolve().parents[2]

# Prometheus and its Flask exporter, our metrics and demo packages, and the B3 propagator (only the
# "broken on purpose" B3 switch uses it).
FORBIDDEN_PREFIXES = (
    "prometheus_client",
    "prometheus_flask_exporter",
    "services.metrics",
    "services.demo",
    "opentelemetry.propagators.b3",
)

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def telemetry_modules() -> list[str]:
    package = services.telemetry
    return [package.__name__] + [
        f"{package.__name__}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
    ]


def loaded_modules(names: list[str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *names],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_every_telemetry_module_is_found() -> None:
    # The probe below is only as good as this list: a module left out would go unchecked.
    names = telemetry_modules()
    expected = {"setup", "flask", "celery", "gunicorn_hooks", "logs", "traced", "safe_attributes"}
    assert {name.rsplit(".", 1)[-1] for name in names} >= expected | {"tracestate", "propagation"}


def test_importing_telemetry_loads_no_prometheus_metrics_or_demo_module() -> None:
    names = telemetry_modules()
    loaded = loaded_modules(names)
    assert set(names) <= set(loaded)  # the probe really imported them
    forbidden = [name for name in loaded if name.startswith(FORBIDDEN_PREFIXES)]
    assert forbidden == []
