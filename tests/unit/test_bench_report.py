"""From window records to bench/results.json: medians, normalisation, targets and the schema."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from tracehop.bench.report import (
    MODES,
    SERVICES,
    results_table,
    rss_added_mb,
    summarise,
    targets,
    targets_table,
    validate_results,
)


def window(mode, phase, round_number, rps, probe_ms, *, drain=0.5, dropped=0, rss=60.0, p95=40.0, cpu=2.0):
    duration = 10.0
    answered = int(rps * duration)
    services = {
        name: {"cpu_s": cpu, "rss_mb": rss * 3, "pss_mb": rss * 2, "processes": 3, "rss_mb_max_process": rss}
        for name in SERVICES
    }
    return {
        "mode": mode,
        "phase": phase,
        "round": round_number,
        "load": {
            "generator": "builtin",
            "shape": phase,
            "duration_s": duration,
            "requests": answered,
            "created": answered // 2,
            "fetched": answered - answered // 2,
            "errors": 0,
            "rps": rps,
            "p50_ms": p95 / 2,
            "p95_ms": p95,
            "p99_ms": p95 * 2,
            "max_ms": p95 * 3,
            "cpu_s": 0.1,
            "target_rps": 100.0 if phase == "fixed_rate" else None,
            "behind_schedule": 0,
        },
        "services": services,
        "drain_cpu_s": {"worker": 1.0},
        "queue_drain_s": drain,
        "queue_purged": 0,
        "spans": None
        if mode == "untraced"
        else {
            "spans_exported": 100,
            "spans_expected": 100 + dropped,
            "spans_dropped": dropped,
            "incomplete_traces": 0,
        },
        "probe_cpu_ms": probe_ms,
    }


# CPU seconds per service and window: stock adds 1.0 s to untraced's 2.0 s, tracehop 0.5 s.
CPU = {"untraced": 2.0, "stock": 3.0, "tracehop": 2.5}


def document(modes=("untraced", "stock", "tracehop"), **overrides):
    windows = []
    # Round 2 ran on a machine 20% slower (probe 6 ms instead of 5): raw throughput fell in every mode.
    for round_number, probe, tracehop, stock, untraced in (
        (1, 5.0, 200.0, 150.0, 250.0),
        (2, 6.0, 170.0, 125.0, 210.0),
        (3, 5.0, 205.0, 155.0, 245.0),
    ):
        for mode, rps in (("tracehop", tracehop), ("stock", stock), ("untraced", untraced)):
            if mode not in modes:
                continue
            options = {"cpu": CPU[mode], **overrides.get(mode, {})}
            windows.append(window(mode, "saturation", round_number, rps, probe, **options))
            windows.append(window(mode, "fixed_rate", round_number, 100.0, probe, **options))
    return summarise(
        windows,
        when="2026-11-20T10:00:00+00:00",
        machine={"cores": 2, "cpu_model": "AMD EPYC", "load_avg_start": [1.0, 1.0, 1.0]},
        settings={"rounds": 3},
        loadgen={"saturation": "builtin"},
        freshness={
            mode: {"p95_s": 0.6 if mode == "tracehop" else 5.5, "samples": 10}
            for mode in modes
            if mode != "untraced"
        },
    )


def test_throughput_is_normalised_by_the_probe_and_reported_as_median_with_range():
    doc = document()
    # Reference probe = median of all windows = 5 ms; round 2's 170 req/s at 6 ms counts as 204.
    assert doc["reference_probe_cpu_ms"] == 5.0
    assert doc["tracehop"]["rps"] == pytest.approx(204.0)
    assert doc["tracehop"]["rps_range"] == [200.0, 205.0]
    assert doc["tracehop"]["rps_raw"] == 200.0
    assert doc["untraced"]["rps"] == pytest.approx(250.0)
    assert doc["ratio_rps"] == pytest.approx(204 / 250, abs=1e-3)
    assert doc["ratio_rps_per_round"]["n"] == 3


# Answers per round at saturation (the document's rps x 10 s), and the rounds' probes.
ANSWERED = {"untraced": (2500, 2100, 2450), "stock": (1500, 1250, 1550), "tracehop": (2000, 1700, 2050)}
PROBES = (5.0, 6.0, 5.0)


def services_cpu_ms_per_request(mode, normalised):
    """One value per round: 3 services x cpu + 1 s of worker drain, per answered request; normalised to
    the reference probe (5 ms): round 2's machine was 20% slower, so its CPU counts 5/6 of itself."""
    values = [(3 * CPU[mode] + 1) * 1000 / n for n in ANSWERED[mode]]
    return [v * 5.0 / probe for v, probe in zip(values, PROBES, strict=True)] if normalised else values


def test_per_request_cpu_includes_what_the_worker_spent_draining_the_queue():
    doc = document()
    worker = doc["untraced"]["services"]["worker"]
    # Round 1 untraced: 2500 answers, 2 s in the window + 1 s draining = 1.2 ms per request.
    assert worker["cpu_s"] == 2.0
    assert worker["cpu_ms_per_req_raw"] == pytest.approx(
        median_of([3000 / 2500, 3000 / 2100, 3000 / 2450]), abs=1e-3
    )
    assert worker["cpu_ms_per_req"] == pytest.approx(
        median_of([3000 / 2500, 3000 / 2100 * 5 / 6, 3000 / 2450]), abs=1e-3
    )


def test_cpu_per_request_is_normalised_by_the_probe_as_throughput_is():
    doc = document()
    for mode in ("untraced", "stock", "tracehop"):
        normalised = services_cpu_ms_per_request(mode, normalised=True)
        raw = services_cpu_ms_per_request(mode, normalised=False)
        assert doc[mode]["services_cpu_ms_per_req"] == pytest.approx(median_of(normalised), abs=1e-3)
        assert doc[mode]["services_cpu_ms_per_req_raw"] == pytest.approx(median_of(raw), abs=1e-3)
        low, high = doc[mode]["services_cpu_ms_per_req_range"]
        assert (low, high) == pytest.approx((min(normalised), max(normalised)), abs=1e-3)
        low, high = doc[mode]["services_cpu_ms_per_req_raw_range"]
        assert (low, high) == pytest.approx((min(raw), max(raw)), abs=1e-3)
    # The slow round no longer counts as the untraced stack's dearest: normalised, the rounds agree.
    untraced = services_cpu_ms_per_request("untraced", normalised=True)
    assert max(untraced) - min(untraced) < 0.1 < 7000 / 2100 - 7000 / 2500


def test_each_traced_mode_is_compared_with_untraced_and_tracehop_with_stock():
    doc = document()
    assert doc["modes"] == ["untraced", "stock", "tracehop"]
    untraced, stock, tracehop = (
        median_of(services_cpu_ms_per_request(mode, normalised=True))
        for mode in ("untraced", "stock", "tracehop")
    )
    raw_untraced, raw_tracehop = (
        median_of(services_cpu_ms_per_request(mode, normalised=False)) for mode in ("untraced", "tracehop")
    )
    assert doc["ratios"]["stock"]["ratio_cpu_efficiency"] == pytest.approx(untraced / stock, abs=1e-3)
    assert doc["ratios"]["tracehop"]["ratio_cpu_efficiency"] == pytest.approx(untraced / tracehop, abs=1e-3)
    assert doc["ratios"]["tracehop"]["ratio_cpu_efficiency_raw"] == pytest.approx(
        raw_untraced / raw_tracehop, abs=1e-3
    )
    assert doc["ratio_cpu_efficiency"] == doc["ratios"]["tracehop"]["ratio_cpu_efficiency"]
    assert doc["ratios"]["stock"]["ratio_rps"] == pytest.approx(150 / 250, abs=1e-3)
    removed = doc["overhead_removed"]
    assert 0 < removed["cpu"] < 1
    assert removed["cpu"] == pytest.approx(1 - (tracehop - untraced) / (stock - untraced), abs=3e-3)
    assert removed["rps"] == pytest.approx(1 - (1 - 204 / 250) / (1 - 150 / 250), abs=2e-3)
    assert doc["freshness_p95_s"] == 0.6 and doc["stock"]["freshness"]["p95_s"] == 5.5


def test_without_the_stock_mode_there_is_no_share_removed():
    doc = document(modes=("untraced", "tracehop"))
    assert "stock" not in doc and doc["overhead_removed"] is None
    assert validate_results(doc) == []


def median_of(values):
    return sorted(values)[len(values) // 2]


def test_results_document_has_every_field_the_issue_names_and_is_json():
    doc = document()
    assert validate_results(doc) == []
    for mode in MODES:
        for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "spans_exported", "spans_dropped", "queue_drain_s"):
            assert key in doc[mode]
        for service in SERVICES:
            assert {"cpu_s", "rss_mb"} <= set(doc[mode]["services"][service])
    for key in ("ratio_rps", "freshness_p95_s", "machine", "when"):
        assert key in doc
    assert json.loads(json.dumps(doc)) == doc


def test_validation_names_what_is_missing():
    doc = document()
    del doc["tracehop"]["spans_dropped"]
    del doc["untraced"]["services"]["worker"]["rss_mb"]
    del doc["machine"]["cores"]
    problems = validate_results(doc)
    assert "missing tracehop.spans_dropped" in problems
    assert "missing untraced.services.worker.rss_mb" in problems
    assert "missing machine.cores" in problems


def test_targets_are_judged_from_the_summary():
    doc = document()
    targets = doc["targets"]
    assert targets["ratio_rps"]["met"] is True  # 0.816 >= 0.80
    assert targets["ratio_cpu_efficiency"]["met"] is False  # 2.86 / 4.39 ms per request = 0.65
    assert targets["ratio_p99_fixed_rate"]["met"] is True
    assert targets["spans_dropped"]["met"] is True
    assert targets["freshness_p95_s"]["met"] is True
    assert targets["queue_drain_s"]["met"] is True
    assert targets["rss_added_mb"]["met"] is True

    worse = document(tracehop={"dropped": 3, "drain": 8.0, "rss": 75.0})
    assert worse["tracehop"]["spans_dropped"] == 9  # 3 per saturation window
    assert worse["targets"]["spans_dropped"]["met"] is False
    assert worse["targets"]["queue_drain_s"]["met"] is False
    assert rss_added_mb(worse)["gateway"] == pytest.approx(15.0)
    assert worse["targets"]["rss_added_mb"]["met"] is False


def test_a_queue_that_never_drained_is_not_a_met_target():
    doc = document(untraced={"drain": None})
    assert doc["untraced"]["queue_drain_s"] is None
    assert doc["targets"]["queue_drain_s"]["met"] is None


def test_tables_render():
    doc = document()
    console = Console(record=True, width=200)
    console.print(results_table(doc))
    console.print(targets_table(doc))
    text = console.export_text()
    assert "req/s at saturation" in text and "spans dropped" in text
    assert "tracehop/untraced" in text and "stock/untraced" in text
    assert "share of stock's overhead tracehop removes" in text
    assert "ratio_rps" in text and "freshness_p95_s" in text


def test_the_tables_name_the_fixed_rate_the_run_used():
    doc = document()
    assert doc["targets"]["ratio_p99_fixed_rate"]["target"].endswith("at 100 req/s")
    for mode in ("untraced", "stock", "tracehop"):
        doc[mode]["fixed_rate"]["target_rps"] = 30.0  # BENCH_RATE=30
    assert targets(doc)["ratio_p99_fixed_rate"]["target"].endswith("at 30 req/s")
    console = Console(record=True, width=200)
    console.print(results_table(doc))
    text = console.export_text()
    assert "freshness p95 s (30 req/s)" in text and "100 req/s" not in text
