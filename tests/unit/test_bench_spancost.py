"""`python -m tracehop.bench.spancost`: real apps in real processes, and the spans each mode makes.

What it measures (CPU per request) is not asserted — no timed tests; what each mode exports per request
is: the same trees in stock and tracehop (spans per request), nothing at all untraced. The span counts
are the bench mix's: users 5.5 (POST 6, GET 5), gateway 2.5 (POST 3, GET 2), worker 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SPANS_PER_REQUEST = {"users": 5.5, "gateway": 2.5, "worker": 2}


def test_each_mode_makes_the_same_spans_and_untraced_none(tmp_path: Path) -> None:
    out = tmp_path / "spancost.json"
    command = [
        sys.executable, "-m", "tracehop.bench.spancost", "--service", ",".join(SPANS_PER_REQUEST),
        "--repeats", "1", "--requests", "20", "--warmup", "4", "--json", str(out),
        "--variant", "sdk:TRACEHOP_LEAN_TRACER=false",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=600)
    services = json.loads(out.read_text())["services"]
    for service, spans in SPANS_PER_REQUEST.items():
        modes = services[service]
        assert set(modes) == {"untraced", "stock", "tracehop", "sdk"}
        assert modes["untraced"]["exported_per_req"]["spans"] == 0
        for mode in ("stock", "tracehop", "sdk"):
            assert modes[mode]["exported_per_req"]["spans"] == spans, (service, mode)
        # tracehop's spans, attributes and events are the same whether the SDK or the lean provider
        # makes them.
        assert modes["tracehop"]["exported_per_req"] == modes["sdk"]["exported_per_req"], service
        assert modes["tracehop"]["thread_cpu_us_per_req"] > 0
