"""From the bench's window records to `bench/results.json` and the table printed at the end.

A window record is one load window of one mode (traced/untraced) and phase (saturation/fixed_rate) in
one round: what the load generator saw, the CPU probe's reading, each component's CPU and memory, the
queue drain and the span account. `summarise` turns the records into the published document: medians
with their range across rounds, throughput normalised by the CPU probe, and the issue's targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from tracehop.bench.stats import median, normalise_rps, paired_ratios, ratio, round_or_none, spread
from tracehop.stack.config import SERVICES

SCHEMA_VERSION = 1
MODES = ("traced", "untraced")
SATURATION, FIXED_RATE = "saturation", "fixed_rate"
# Also measured: they share the machine's two cores with the services. Any other program the stack
# runner supervises (it grows) is measured too and listed after these.
COMPONENTS = (*SERVICES, "trace-store", "redis", "supervisord")

TARGET_RATIO = 0.85
TARGET_FRESHNESS_S = 2.0
TARGET_DRAIN_S = 5.0
TARGET_RSS_ADDED_MB = 10.0

REQUIRED_TOP = ("schema", "when", "machine", "settings", "ratio_rps", "freshness_p95_s", *MODES, "targets")
REQUIRED_MODE = (
    "rps",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "services",
    "spans_exported",
    "spans_dropped",
    "queue_drain_s",
)
REQUIRED_SERVICE = ("cpu_s", "rss_mb")
REQUIRED_MACHINE = ("cores", "cpu_model")


def windows_of(windows: Sequence[Mapping[str, Any]], mode: str, phase: str) -> list[Mapping[str, Any]]:
    return sorted((w for w in windows if w["mode"] == mode and w["phase"] == phase), key=lambda w: w["round"])


def components_of(windows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The components measured, the usual ones first in a fixed order, then any other in name order."""
    found = {name for w in windows for name in w.get("services", {})}
    return [c for c in COMPONENTS if c in found] + sorted(found - set(COMPONENTS))


def reference_probe_ms(windows: Sequence[Mapping[str, Any]]) -> float | None:
    """The machine's typical speed over the whole run: normalised numbers stay in familiar units."""
    return median(w.get("probe_cpu_ms") for w in windows)


def normalised_rps(window: Mapping[str, Any], reference_ms: float | None) -> float:
    return normalise_rps(window["load"]["rps"], window.get("probe_cpu_ms"), reference_ms)


def _service_summary(windows: Sequence[Mapping[str, Any]], component: str) -> dict[str, Any]:
    usages = [w["services"][component] for w in windows if component in w.get("services", {})]
    if not usages:
        return {}
    per_request = []
    for w in windows:
        usage = w.get("services", {}).get(component)
        answered = w["load"]["created"] + w["load"]["fetched"]
        if usage is None or not answered:
            continue
        # The worker keeps working after the load stopped: its drain-time CPU belongs to these requests.
        cpu = usage["cpu_s"] + w.get("drain_cpu_s", {}).get(component, 0.0)
        per_request.append(cpu * 1000 / answered)
    rss = [u["rss_mb"] for u in usages]
    processes = max(u["processes"] for u in usages)
    return {
        "cpu_s": round_or_none(median(u["cpu_s"] for u in usages)),
        "cpu_ms_per_req": round_or_none(median(per_request)),
        "rss_mb": round_or_none(max(rss), 1),
        "pss_mb": round_or_none(max((u.get("pss_mb") or 0.0) for u in usages), 1),
        "processes": processes,
        "rss_mb_per_process": round_or_none(max(rss) / processes if processes else None, 1),
        "rss_mb_max_process": round_or_none(max(u["rss_mb_max_process"] for u in usages), 1),
    }


def _cpu_per_request(windows: Sequence[Mapping[str, Any]], components: Sequence[str]) -> float | None:
    """CPU ms per answered request, summed over `components`, drain included; median over windows.

    Unlike throughput this hardly moves when someone else's processes take CPU from the machine, so it
    is the steadier measure of what tracing costs on a shared machine.
    """
    values = []
    for w in windows:
        answered = w["load"]["created"] + w["load"]["fetched"]
        if not answered:
            continue
        cpu = sum(
            w["services"].get(c, {}).get("cpu_s", 0.0) + w.get("drain_cpu_s", {}).get(c, 0.0)
            for c in components
        )
        values.append(cpu * 1000 / answered)
    return median(values)


def _span_totals(windows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    totals = {"spans_exported": 0, "spans_expected": 0, "spans_dropped": 0, "incomplete_traces": 0}
    for w in windows:
        for key in totals:
            totals[key] += (w.get("spans") or {}).get(key, 0)
    return totals


def _drain_summary(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    drains = [w.get("queue_drain_s") for w in windows]
    return {
        "queue_drain_s": round_or_none(median(drains)),
        "queue_drain_s_max": round_or_none(max((d for d in drains if d is not None), default=None)),
        "not_drained": sum(1 for d in drains if d is None),
        "queue_purged": sum(w.get("queue_purged", 0) for w in windows),
    }


def _latency(windows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    return {
        key: round_or_none(median(w["load"][key] for w in windows), 2)
        for key in ("p50_ms", "p95_ms", "p99_ms")
    }


def summarise_mode(
    windows: Sequence[Mapping[str, Any]], mode: str, reference_ms: float | None
) -> dict[str, Any]:
    sat = windows_of(windows, mode, SATURATION)
    fixed = windows_of(windows, mode, FIXED_RATE)
    rps = spread(normalised_rps(w, reference_ms) for w in sat)
    raw = spread(w["load"]["rps"] for w in sat)
    sat_drain = _drain_summary(sat)
    fixed_drain = _drain_summary(fixed)
    components = components_of(sat)
    return {
        # Saturation: the headline numbers.
        "rps": round_or_none(rps.median if rps else None, 1),
        "rps_range": [round(rps.low, 1), round(rps.high, 1)] if rps else None,
        "rps_raw": round_or_none(raw.median if raw else None, 1),
        "rps_raw_range": [round(raw.low, 1), round(raw.high, 1)] if raw else None,
        **_latency(sat),
        "errors": sum(w["load"]["errors"] for w in sat),
        "services_cpu_ms_per_req": round_or_none(_cpu_per_request(sat, SERVICES)),
        "stack_cpu_ms_per_req": round_or_none(_cpu_per_request(sat, components)),
        "services": {c: _service_summary(sat, c) for c in components},
        **_span_totals(sat),
        # The drain target is about 100 req/s: the fixed-rate phase's drain is the headline one.
        "queue_drain_s": fixed_drain["queue_drain_s"],
        "saturation_queue_drain_s": sat_drain["queue_drain_s"],
        "saturation_queue_drain_s_max": sat_drain["queue_drain_s_max"],
        "saturation_not_drained": sat_drain["not_drained"],
        "saturation_queue_purged": sat_drain["queue_purged"],
        "probe_cpu_ms": round_or_none(median(w.get("probe_cpu_ms") for w in sat)),
        "fixed_rate": {
            "target_rps": fixed[0]["load"]["target_rps"] if fixed else None,
            "rps": round_or_none(median(w["load"]["rps"] for w in fixed), 1),
            **_latency(fixed),
            "errors": sum(w["load"]["errors"] for w in fixed),
            "behind_schedule": sum(w["load"]["behind_schedule"] for w in fixed),
            "loadgen_cpu_s_per_s": round_or_none(
                median(w["load"]["cpu_s"] / w["load"]["duration_s"] for w in fixed if w["load"]["duration_s"])
            ),
            "services": {c: _service_summary(fixed, c) for c in components},
            **_span_totals(fixed),
            **fixed_drain,
        },
        "rounds": len(sat),
    }


def summarise(
    windows: Sequence[Mapping[str, Any]],
    *,
    when: str,
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
    loadgen: Mapping[str, Any],
    freshness: Mapping[str, Any],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    reference_ms = reference_probe_ms(windows)
    modes = {mode: summarise_mode(windows, mode, reference_ms) for mode in MODES}
    traced_sat = windows_of(windows, "traced", SATURATION)
    untraced_sat = windows_of(windows, "untraced", SATURATION)
    pairs = spread(
        paired_ratios(
            [normalised_rps(w, reference_ms) for w in traced_sat],
            [normalised_rps(w, reference_ms) for w in untraced_sat],
        )
    )
    document: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "when": when,
        "machine": dict(machine),
        "settings": dict(settings),
        "loadgen": dict(loadgen),
        "ratio_rps": round_or_none(ratio(modes["traced"]["rps"], modes["untraced"]["rps"])),
        "ratio_rps_per_round": pairs.as_dict() if pairs else None,
        "ratio_rps_raw": round_or_none(ratio(modes["traced"]["rps_raw"], modes["untraced"]["rps_raw"])),
        # The same question asked of CPU per request (untraced / traced): robust to other people's load.
        "ratio_cpu_efficiency": round_or_none(
            ratio(modes["untraced"]["services_cpu_ms_per_req"], modes["traced"]["services_cpu_ms_per_req"])
        ),
        "freshness_p95_s": freshness.get("p95_s"),
        "freshness": dict(freshness),
        "reference_probe_cpu_ms": round_or_none(reference_ms),
        **modes,
        "notes": list(notes),
        "windows": list(windows),
    }
    document["targets"] = targets(document)
    return document


def rss_added_mb(document: Mapping[str, Any]) -> dict[str, float | None]:
    """Per service: RSS per process traced minus untraced."""
    added: dict[str, float | None] = {}
    for service in SERVICES:
        traced = document["traced"]["services"].get(service, {}).get("rss_mb_per_process")
        untraced = document["untraced"]["services"].get(service, {}).get("rss_mb_per_process")
        added[service] = None if traced is None or untraced is None else round(traced - untraced, 1)
    return added


def _target(description: str, value: Any, met: bool | None) -> dict[str, Any]:
    return {"target": description, "value": value, "met": met}


def targets(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    traced = document["traced"]
    ratio_value = document["ratio_rps"]
    freshness = document["freshness_p95_s"]
    drain = [document[mode]["queue_drain_s"] for mode in MODES]
    added = [value for value in rss_added_mb(document).values() if value is not None]
    return {
        "ratio_rps": _target(
            ">= 0.85 at saturation", ratio_value, None if ratio_value is None else ratio_value >= TARGET_RATIO
        ),
        "spans_dropped": _target("0 at saturation", traced["spans_dropped"], traced["spans_dropped"] == 0),
        "incomplete_traces": _target(
            "every sampled trace complete", traced["incomplete_traces"], traced["incomplete_traces"] == 0
        ),
        "freshness_p95_s": _target(
            "<= 2 s", freshness, None if freshness is None else freshness <= TARGET_FRESHNESS_S
        ),
        "queue_drain_s": _target(
            "<= 5 s after 100 req/s (traced and untraced)",
            max((d for d in drain if d is not None), default=None),
            None if any(d is None for d in drain) else all(d <= TARGET_DRAIN_S for d in drain),
        ),
        "rss_added_mb": _target(
            "<= 10 MB per service process",
            rss_added_mb(document),
            None if not added else max(added) <= TARGET_RSS_ADDED_MB,
        ),
    }


def validate_results(document: Mapping[str, Any]) -> list[str]:
    """What is missing from a results document (empty when it has every field the issue asks for)."""
    problems = [f"missing top-level field {key!r}" for key in REQUIRED_TOP if key not in document]
    machine = document.get("machine") or {}
    problems += [f"missing machine.{key}" for key in REQUIRED_MACHINE if key not in machine]
    for mode in MODES:
        section = document.get(mode)
        if not isinstance(section, Mapping):
            continue
        problems += [f"missing {mode}.{key}" for key in REQUIRED_MODE if key not in section]
        services = section.get("services") or {}
        for service in SERVICES:
            if service not in services:
                problems.append(f"missing {mode}.services.{service}")
                continue
            problems += [
                f"missing {mode}.services.{service}.{key}"
                for key in REQUIRED_SERVICE
                if key not in services[service]
            ]
    return problems


# ------------------------------------------------------------------------------------------ the tables


def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _with_range(value: float | None, bounds: Sequence[float] | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    if not bounds:
        return _num(value, digits)
    return f"{value:,.{digits}f} ({bounds[0]:,.{digits}f}–{bounds[1]:,.{digits}f})"


def _service_value(document: Mapping[str, Any], mode: str, service: str, key: str) -> float | None:
    return document[mode]["services"].get(service, {}).get(key)


def results_table(document: Mapping[str, Any]) -> Table:
    table = Table(title="tracehop bench: cost of tracing", box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("metric")
    table.add_column("untraced", justify="right")
    table.add_column("traced", justify="right")
    table.add_column("traced/untraced", justify="right")
    traced, untraced = document["traced"], document["untraced"]

    def row(label: str, key: str, digits: int = 1, section: str | None = None) -> None:
        t = traced[section][key] if section else traced[key]
        u = untraced[section][key] if section else untraced[key]
        table.add_row(label, _num(u, digits), _num(t, digits), _num(ratio(t, u), 2))

    table.add_row(
        "req/s at saturation (normalised, median (range))",
        _with_range(untraced["rps"], untraced["rps_range"]),
        _with_range(traced["rps"], traced["rps_range"]),
        _num(document["ratio_rps"], 2),
    )
    row("req/s at saturation (raw)", "rps_raw", 0)
    table.add_row(
        "CPU ms per request, gateway+users+worker",
        _num(untraced["services_cpu_ms_per_req"], 2),
        _num(traced["services_cpu_ms_per_req"], 2),
        _num(ratio(traced["services_cpu_ms_per_req"], untraced["services_cpu_ms_per_req"]), 2),
    )
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        row(f"{key.removesuffix('_ms')} ms at saturation", key)
    row("req/s at fixed rate", "rps", 1, "fixed_rate")
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        row(f"{key.removesuffix('_ms')} ms at fixed rate", key, 1, "fixed_rate")
    for service in document["traced"]["services"]:
        t = _service_value(document, "traced", service, "cpu_ms_per_req")
        u = _service_value(document, "untraced", service, "cpu_ms_per_req")
        if t is not None or u is not None:
            table.add_row(f"{service} CPU ms per request", _num(u, 2), _num(t, 2), _num(ratio(t, u), 2))
    for service in SERVICES:
        t = _service_value(document, "traced", service, "rss_mb")
        u = _service_value(document, "untraced", service, "rss_mb")
        n = _service_value(document, "traced", service, "processes")
        table.add_row(f"{service} RSS MB ({n} processes)", _num(u), _num(t), _num(ratio(t, u), 2))
    row("spans exported (saturation)", "spans_exported", 0)
    row("spans dropped (saturation)", "spans_dropped", 0)
    row("incomplete traces (saturation)", "incomplete_traces", 0)
    row("queue drain s after saturation", "saturation_queue_drain_s", 1)
    row("queue drain s after 100 req/s", "queue_drain_s", 1)
    table.add_row("freshness p95 s (traced, 100 req/s)", "", _num(document["freshness_p95_s"], 2), "")
    return table


def targets_table(document: Mapping[str, Any]) -> Table:
    table = Table(title="targets (issue 4)", box=box.SIMPLE, title_justify="left")
    table.add_column("target")
    table.add_column("wanted")
    table.add_column("measured", justify="right")
    table.add_column("met")
    for name, target in document["targets"].items():
        value = target["value"]
        if isinstance(value, Mapping):
            shown = ", ".join(f"{k} {_num(v)}" for k, v in value.items())
        elif isinstance(value, float):
            shown = f"{value:.2f}"
        else:
            shown = "–" if value is None else str(value)
        met = {True: "[green]yes[/]", False: "[red]no[/]", None: "?"}[target["met"]]
        table.add_row(name, target["target"], shown, met)
    return table
