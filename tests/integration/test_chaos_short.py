"""`make chaos`, short: three faults under load on a private stack, then every accepted job accounted for.

The full run (every component, the trace backend paused 30 s, 40 req/s) is `make chaos`; its numbers are
in docs/reliability.md.
"""

from __future__ import annotations

import json

from tracehop.bench import chaos


def test_short_chaos_loses_no_job_and_every_service_comes_back(tmp_path):
    out = tmp_path / "chaos.json"
    assert chaos.main(["--short", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    jobs = report["jobs"]
    assert jobs["accepted"] > 50 and jobs["lost"] == []
    assert jobs["success"] + jobs["failure"] == jobs["accepted"]
    # A careful client (same Idempotency-Key, retried for 20 s) got its user created, nearly always.
    assert report["responses_by_status"].get("201", 0) >= 0.98 * report["requests"]
    assert [f["name"] for f in report["faults"]] == [f.name for f in chaos.SHORT_FAULTS]
    assert all(f["service_back_s"] is not None for f in report["faults"]), report["faults"]
    assert all(f["process_replaced_s"] is not None for f in report["faults"]), report["faults"]
