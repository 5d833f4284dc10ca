"""From the bench's window records to `bench/results.json` and the table printed at the end.

A window record is one load window of one mode and phase (saturation/fixed_rate) in one round: what the
load generator saw, the CPU probe's reading, each component's CPU and memory, the queue drain and the
span account. The modes: `untraced` (OTEL_SDK_DISABLED=true), `stock` (OpenTelemetry's documented setup
at the SDK's defaults) and `tracehop` (our setup as shipped). `summarise` turns the records into the
published document: medians with their range across rounds, throughput normalised by the CPU probe, each
traced mode's ratios to `untraced` from the same run, and the issues' targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich import box
from rich.table import Table

from tracehop.bench.stats import (
    median,
    normalise_cpu_ms,
    normalise_rps,
    paired_ratios,
    pooled_percentile,
    ratio,
    round_or_none,
    spread,
)
from tracehop.stack.config import SERVICES

SCHEMA_VERSION = 2
BASELINE, STOCK, TRACEHOP = "untraced", "stock", "tracehop"
MODES = (BASELINE, STOCK, TRACEHOP)  # every mode the bench knows, in table order
TRACED_MODES = (STOCK, TRACEHOP)
SATURATION, FIXED_RATE = "saturation", "fixed_rate"
# Also measured: they share the machine's two cores with the services. Any other program the stack
# runner supervises (it grows) is measured too and listed after these.
COMPONENTS = (*SERVICES, "trace-store", "redis", "supervisord")

TARGET_RATIO = 0.80  # issue 11: req/s and CPU per request, tracehop against untraced
TARGET_P99_FACTOR = 1.3  # issue 11: p99 at the fixed rate, traced against untraced
TARGET_FRESHNESS_S = 2.0
TARGET_DRAIN_S = 5.0
TARGET_RSS_ADDED_MB = 10.0

REQUIRED_TOP = ("schema", "when", "machine", "settings", "ratio_rps", "freshness_p95_s", "modes", "targets")
REQUIRED_MODES = (BASELINE, TRACEHOP)
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


def _service_summary(
    windows: Sequence[Mapping[str, Any]], component: str, reference_ms: float | None
) -> dict[str, Any]:
    measured = [w for w in windows if component in w.get("services", {})]
    if not measured:
        return {}
    usages = [w["services"][component] for w in measured]
    rss = [u["rss_mb"] for u in usages]
    processes = max(u["processes"] for u in usages)
    return {
        "cpu_s": round_or_none(median(u["cpu_s"] for u in usages)),
        "cpu_ms_per_req": round_or_none(median(cpu_ms_per_request(measured, [component], reference_ms))),
        "cpu_ms_per_req_raw": round_or_none(median(cpu_ms_per_request(measured, [component]))),
        "rss_mb": round_or_none(max(rss), 1),
        "pss_mb": round_or_none(max((u.get("pss_mb") or 0.0) for u in usages), 1),
        "processes": processes,
        "rss_mb_per_process": round_or_none(max(rss) / processes if processes else None, 1),
        "rss_mb_max_process": round_or_none(max(u["rss_mb_max_process"] for u in usages), 1),
    }


def cpu_ms_per_request(
    windows: Sequence[Mapping[str, Any]], components: Sequence[str], reference_ms: float | None = None
) -> list[float]:
    """CPU ms per answered request, summed over `components`, drain included; one value per window;
    at the run's reference speed when `reference_ms` is given (stats.normalise_cpu_ms), else raw.

    Unlike throughput this hardly moves when someone else's processes take CPU from the machine, so it
    is the steadier measure of what tracing costs on a shared machine.
    """
    values = []
    for w in windows:
        answered = w["load"]["created"] + w["load"]["fetched"]
        if not answered:
            continue
        # The worker keeps working after the load stopped: its drain-time CPU belongs to these requests.
        cpu = sum(
            w["services"].get(c, {}).get("cpu_s", 0.0) + w.get("drain_cpu_s", {}).get(c, 0.0)
            for c in components
        )
        values.append(normalise_cpu_ms(cpu * 1000 / answered, w.get("probe_cpu_ms"), reference_ms))
    return values


def _span_totals(windows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    totals = {
        "spans_exported": 0,
        "spans_expected": 0,
        "spans_dropped": 0,
        "incomplete_traces": 0,
        "traces": 0,
    }
    answered = 0
    for w in windows:
        for key in totals:
            totals[key] += (w.get("spans") or {}).get(key, 0)
        answered += w["load"]["created"] + w["load"]["fetched"]
    # The share of answered requests whose trace was stored: 1 at 100% sampling, about the ratio below.
    totals["traces_per_request"] = (
        round(totals["traces"] / answered, 3) if answered and totals["traces"] else None
    )
    return totals


def _drain_summary(windows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    drains = [w.get("queue_drain_s") for w in windows]
    return {
        "queue_drain_s": round_or_none(median(drains)),
        "queue_drain_s_max": round_or_none(max((d for d in drains if d is not None), default=None)),
        "not_drained": sum(1 for d in drains if d is None),
        "queue_purged": sum(w.get("queue_purged", 0) for w in windows),
    }


def _range(values: Sequence[float]) -> list[float] | None:
    summary = spread(values)
    return None if summary is None else [round(summary.low, 3), round(summary.high, 3)]


def _latency(windows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    return {
        key: round_or_none(median(w["load"][key] for w in windows), 2)
        for key in ("p50_ms", "p95_ms", "p99_ms")
    }


def _pooled_p99(windows: Sequence[Mapping[str, Any]]) -> float | None:
    """The p99 of every window's requests together (results before it was recorded: None)."""
    if not windows or any("slowest_ms" not in w["load"] for w in windows):
        return None
    return round_or_none(
        pooled_percentile([(w["load"]["requests"], w["load"]["slowest_ms"]) for w in windows], 99), 2
    )


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
    services_cpu = cpu_ms_per_request(sat, SERVICES, reference_ms)
    services_cpu_raw = cpu_ms_per_request(sat, SERVICES)
    return {
        # Saturation: the headline numbers.
        "rps": round_or_none(rps.median if rps else None, 1),
        "rps_range": [round(rps.low, 1), round(rps.high, 1)] if rps else None,
        "rps_raw": round_or_none(raw.median if raw else None, 1),
        "rps_raw_range": [round(raw.low, 1), round(raw.high, 1)] if raw else None,
        **_latency(sat),
        "errors": sum(w["load"]["errors"] for w in sat),
        # CPU per request at the run's reference speed, as throughput is; `_raw`: as measured.
        "services_cpu_ms_per_req": round_or_none(median(services_cpu)),
        "services_cpu_ms_per_req_range": _range(services_cpu),
        "services_cpu_ms_per_req_raw": round_or_none(median(services_cpu_raw)),
        "services_cpu_ms_per_req_raw_range": _range(services_cpu_raw),
        "stack_cpu_ms_per_req": round_or_none(median(cpu_ms_per_request(sat, components, reference_ms))),
        "services": {c: _service_summary(sat, c, reference_ms) for c in components},
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
            "p99_pooled_ms": _pooled_p99(fixed),
            "errors": sum(w["load"]["errors"] for w in fixed),
            "behind_schedule": sum(w["load"]["behind_schedule"] for w in fixed),
            "loadgen_cpu_s_per_s": round_or_none(
                median(w["load"]["cpu_s"] / w["load"]["duration_s"] for w in fixed if w["load"]["duration_s"])
            ),
            "services": {c: _service_summary(fixed, c, reference_ms) for c in components},
            **_span_totals(fixed),
            **fixed_drain,
        },
        "rounds": len(sat),
    }


def compare(windows: Sequence[Mapping[str, Any]], modes: Mapping[str, Any], mode: str, reference_ms) -> dict:
    """One traced mode against untraced from the same run: the ratios the tables and targets quote."""
    traced, untraced = modes[mode], modes[BASELINE]
    pairs = spread(
        paired_ratios(
            [normalised_rps(w, reference_ms) for w in windows_of(windows, mode, SATURATION)],
            [normalised_rps(w, reference_ms) for w in windows_of(windows, BASELINE, SATURATION)],
        )
    )
    cpu_pairs = spread(
        paired_ratios(
            cpu_ms_per_request(windows_of(windows, BASELINE, SATURATION), SERVICES, reference_ms),
            cpu_ms_per_request(windows_of(windows, mode, SATURATION), SERVICES, reference_ms),
        )
    )
    cpu_t, cpu_u = traced["services_cpu_ms_per_req"], untraced["services_cpu_ms_per_req"]
    raw_t, raw_u = traced["services_cpu_ms_per_req_raw"], untraced["services_cpu_ms_per_req_raw"]
    return {
        "ratio_rps": round_or_none(ratio(traced["rps"], untraced["rps"])),
        "ratio_rps_per_round": pairs.as_dict() if pairs else None,
        "ratio_rps_raw": round_or_none(ratio(traced["rps_raw"], untraced["rps_raw"])),
        # The same question asked of CPU per request (untraced / traced): robust to other people's load.
        "ratio_cpu_efficiency": round_or_none(ratio(cpu_u, cpu_t)),
        "ratio_cpu_efficiency_raw": round_or_none(ratio(raw_u, raw_t)),
        "ratio_cpu_efficiency_per_round": cpu_pairs.as_dict() if cpu_pairs else None,
        "cpu_ms_added_per_req": round_or_none(None if cpu_t is None or cpu_u is None else cpu_t - cpu_u),
        "ratio_p99_fixed_rate": round_or_none(
            ratio(traced["fixed_rate"]["p99_ms"], untraced["fixed_rate"]["p99_ms"])
        ),
        "ratio_p99_fixed_rate_pooled": round_or_none(
            ratio(traced["fixed_rate"].get("p99_pooled_ms"), untraced["fixed_rate"].get("p99_pooled_ms"))
        ),
    }


def overhead_removed(comparisons: Mapping[str, Mapping[str, Any]]) -> dict[str, float | None] | None:
    """The share of stock OpenTelemetry's tracing overhead that tracehop's setup does not pay.

    cpu: 1 - (CPU ms tracehop adds per request) / (CPU ms stock adds); rps: 1 - (1 - tracehop's ratio) /
    (1 - stock's ratio). 0 = no better than stock, 1 = tracing for free.
    """
    if STOCK not in comparisons or TRACEHOP not in comparisons:
        return None
    stock, ours = comparisons[STOCK], comparisons[TRACEHOP]

    def share(ours_cost: float | None, stock_cost: float | None) -> float | None:
        if ours_cost is None or stock_cost is None or stock_cost <= 0:
            return None
        return round(1 - ours_cost / stock_cost, 3)

    return {
        "cpu": share(ours["cpu_ms_added_per_req"], stock["cpu_ms_added_per_req"]),
        "rps": share(
            None if ours["ratio_rps"] is None else 1 - ours["ratio_rps"],
            None if stock["ratio_rps"] is None else 1 - stock["ratio_rps"],
        ),
    }


def summarise(
    windows: Sequence[Mapping[str, Any]],
    *,
    when: str,
    machine: Mapping[str, Any],
    settings: Mapping[str, Any],
    loadgen: Mapping[str, Any],
    freshness: Mapping[str, Mapping[str, Any]],
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """`freshness`: per traced mode, the FreshnessResult of its fixed-rate windows."""
    reference_ms = reference_probe_ms(windows)
    present = [mode for mode in MODES if any(w["mode"] == mode for w in windows)]
    modes = {mode: summarise_mode(windows, mode, reference_ms) for mode in present}
    for mode, result in freshness.items():
        if mode in modes:
            modes[mode]["freshness"] = dict(result)
    comparisons = {
        mode: compare(windows, modes, mode, reference_ms)
        for mode in TRACED_MODES
        if mode in modes and BASELINE in modes
    }
    headline = comparisons.get(TRACEHOP, {})
    document: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "when": when,
        "machine": dict(machine),
        "settings": dict(settings),
        "loadgen": dict(loadgen),
        "modes": present,
        # tracehop against untraced: the headline numbers; every traced mode's under `ratios`.
        "ratio_rps": headline.get("ratio_rps"),
        "ratio_rps_per_round": headline.get("ratio_rps_per_round"),
        "ratio_rps_raw": headline.get("ratio_rps_raw"),
        "ratio_cpu_efficiency": headline.get("ratio_cpu_efficiency"),
        "ratios": comparisons,
        "overhead_removed": overhead_removed(comparisons),
        "freshness_p95_s": freshness.get(TRACEHOP, {}).get("p95_s"),
        "reference_probe_cpu_ms": round_or_none(reference_ms),
        **modes,
        "notes": list(notes),
        "windows": list(windows),
    }
    document["targets"] = targets(document)
    return document


def rss_added_mb(document: Mapping[str, Any], mode: str = TRACEHOP) -> dict[str, float | None]:
    """Per service: RSS per process traced minus untraced."""
    added: dict[str, float | None] = {}
    for service in SERVICES:
        traced = document[mode]["services"].get(service, {}).get("rss_mb_per_process")
        untraced = document[BASELINE]["services"].get(service, {}).get("rss_mb_per_process")
        added[service] = None if traced is None or untraced is None else round(traced - untraced, 1)
    return added


def _target(description: str, value: Any, met: bool | None) -> dict[str, Any]:
    return {"target": description, "value": value, "met": met}


def _at_least(value: float | None, wanted: float) -> bool | None:
    return None if value is None else value >= wanted


def fixed_rate_label(document: Mapping[str, Any]) -> str:
    """The fixed-rate phase's rate as the tables name it: 100 req/s unless BENCH_RATE said otherwise."""
    rate = document[BASELINE]["fixed_rate"].get("target_rps") or 100
    return f"{rate:g} req/s"


def targets(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's targets, for tracehop's setup against untraced."""
    traced = document[TRACEHOP]
    headline = document["ratios"][TRACEHOP]
    freshness = document["freshness_p95_s"]
    drain = [document[mode]["queue_drain_s"] for mode in (BASELINE, TRACEHOP)]
    added = [value for value in rss_added_mb(document).values() if value is not None]
    p99 = headline["ratio_p99_fixed_rate"]
    rate = fixed_rate_label(document)
    return {
        "ratio_rps": _target(
            f">= {TARGET_RATIO:.2f} at saturation",
            headline["ratio_rps"],
            _at_least(headline["ratio_rps"], TARGET_RATIO),
        ),
        "ratio_cpu_efficiency": _target(
            f">= {TARGET_RATIO:.2f} (untraced / traced CPU ms per request)",
            headline["ratio_cpu_efficiency"],
            _at_least(headline["ratio_cpu_efficiency"], TARGET_RATIO),
        ),
        "ratio_p99_fixed_rate": _target(
            f"<= {TARGET_P99_FACTOR} x untraced p99 at {rate}",
            p99,
            None if p99 is None else p99 <= TARGET_P99_FACTOR,
        ),
        "spans_dropped": _target("0 at saturation", traced["spans_dropped"], traced["spans_dropped"] == 0),
        "incomplete_traces": _target(
            "every sampled trace complete", traced["incomplete_traces"], traced["incomplete_traces"] == 0
        ),
        "freshness_p95_s": _target(
            "<= 2 s", freshness, None if freshness is None else freshness <= TARGET_FRESHNESS_S
        ),
        "queue_drain_s": _target(
            f"<= 5 s after {rate} (traced and untraced)",
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
    problems += [f"missing mode {mode!r}" for mode in REQUIRED_MODES if mode not in document]
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
    modes = [mode for mode in MODES if mode in document]
    traced_modes = [mode for mode in modes if mode != BASELINE]
    table = Table(title="tracehop bench: cost of tracing", box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("metric")
    for mode in modes:
        table.add_column(mode, justify="right")
    for mode in traced_modes:
        table.add_column(f"{mode}/untraced", justify="right")

    def add(label: str, get, digits: int = 1, show=None, ratios: bool = True) -> None:
        values = {mode: get(document[mode]) for mode in modes}
        shown = [(show or (lambda m, v: _num(v, digits)))(mode, values[mode]) for mode in modes]
        quotients = [
            _num(ratio(values[mode], values[BASELINE]), 2) if ratios else "" for mode in traced_modes
        ]
        table.add_row(label, *shown, *quotients)

    add(
        "CPU ms per request, gateway+users+worker (normalised, median (range))",
        lambda m: m["services_cpu_ms_per_req"],
        show=lambda mode, v: _with_range(v, document[mode].get("services_cpu_ms_per_req_range"), 2),
    )
    add("CPU ms per request, gateway+users+worker (raw)", lambda m: m.get("services_cpu_ms_per_req_raw"), 2)
    add(
        "req/s at saturation (normalised, median (range))",
        lambda m: m["rps"],
        show=lambda mode, v: _with_range(v, document[mode]["rps_range"]),
    )
    add("req/s at saturation (raw)", lambda m: m["rps_raw"], 0)
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        add(f"{key.removesuffix('_ms')} ms at saturation", lambda m, k=key: m[k])
    add("req/s at fixed rate", lambda m: m["fixed_rate"]["rps"])
    for key in ("p50_ms", "p95_ms", "p99_ms"):
        add(f"{key.removesuffix('_ms')} ms at fixed rate", lambda m, k=key: m["fixed_rate"][k])
    add("p99 ms at fixed rate, all windows pooled", lambda m: m["fixed_rate"].get("p99_pooled_ms"))
    for service in document[modes[-1]]["services"]:
        add(
            f"{service} CPU ms per request",
            lambda m, s=service: m["services"].get(s, {}).get("cpu_ms_per_req"),
            2,
        )
    for service in SERVICES:
        add(f"{service} RSS MB", lambda m, s=service: m["services"].get(s, {}).get("rss_mb"))
    add("spans exported (saturation)", lambda m: m["spans_exported"], 0, ratios=False)
    add("spans dropped (saturation)", lambda m: m["spans_dropped"], 0, ratios=False)
    add("incomplete traces (saturation)", lambda m: m["incomplete_traces"], 0, ratios=False)
    add("queue drain s after saturation", lambda m: m["saturation_queue_drain_s"], ratios=False)
    rate = fixed_rate_label(document)
    add(f"queue drain s after {rate}", lambda m: m["queue_drain_s"], ratios=False)
    add(
        f"freshness p95 s ({rate})",
        lambda m: (m.get("freshness") or {}).get("p95_s"),
        2,
        show=lambda mode, v: "" if mode == BASELINE else _num(v, 2),
        ratios=False,
    )
    removed = document.get("overhead_removed")
    if removed:
        cells = ["" for _ in modes]
        cells[modes.index(TRACEHOP)] = f"cpu {_percent(removed['cpu'])}, req/s {_percent(removed['rps'])}"
        table.add_row("share of stock's overhead tracehop removes", *cells, *["" for _ in traced_modes])
    return table


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def targets_table(document: Mapping[str, Any]) -> Table:
    table = Table(
        title="targets (issues 4 and 11), tracehop against untraced", box=box.SIMPLE, title_justify="left"
    )
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
