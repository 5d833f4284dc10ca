"""Measure the gateway's two worker models side by side: gthread (before issue 16) and the public door.

    python -m tools.door_compare [--duration 15] [--rounds 2] [--connections 8] [--out FILE]

Two embedded stacks run at once (traced, two gateway processes each; only the gateway's worker class
differs). Load windows alternate between them in ABBA order (the machine's speed drifts), each a
saturation run of the bench's workload (POST and GET /api/users) with the bench's own generator; the
gateway's CPU per answered request comes from /proc. Then each stack gets a slow-client phase (256 slow
headers, 256 slow bodies) while `GET /healthz` is timed. Numbers go to docs/reliability.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

import requests

from tracehop.bench.load import BuiltinLoad, UserMix
from tracehop.bench.procs import service_groups, snapshot, usage_between
from tracehop.slow_clients import slow_client_phase
from tracehop.stack.config import free_stack_ports
from tracehop.stack.runner import LocalStack

VARIANTS = {"gthread": "gthread", "gevent door": "services.web.public_door.PublicDoorWorker"}
SERVICES = ("gateway", "users", "worker", "trace-store", "redis")


def start(name: str, worker_class: str, root: Path) -> LocalStack:
    env = {"TRACEHOP_GATEWAY_WORKER_CLASS": worker_class, "TRACEHOP_MAIL_LATENCY_MS": "1"}
    directory = root / name.replace(" ", "-")
    stack = LocalStack(
        directory / "var", directory / "logs", free_stack_ports(), env, prometheus=False, beat=False
    )
    stack.start(timeout=180)
    session = requests.Session()
    session.trust_env = False
    for number in range(20):  # the users the GETs ask for
        body = {"name": "Bench User", "email": f"warm-{number}@example.org"}
        session.post(f"{stack.urls['gateway']}/api/users", json=body, timeout=10).raise_for_status()
    return stack


def window(stack: LocalStack, duration_s: float, connections: int) -> dict[str, float]:
    groups = service_groups({status.component: status.pid for status in stack.status()})
    groups = {service: pgids for service, pgids in groups.items() if service in SERVICES}
    before = snapshot(groups)
    result = BuiltinLoad(stack.urls["gateway"], UserMix(), duration_s, connections=connections).run()
    after = snapshot(groups)
    cpu = {name: usage_between(before[name], after[name]).cpu_s for name in groups}
    return {
        "rps": result.rps,
        "p50_ms": result.p50_ms or 0.0,
        "p99_ms": result.p99_ms or 0.0,
        "errors": result.errors,
        "gateway_cpu_ms_per_request": 1000 * cpu["gateway"] / max(result.ok, 1),
        "services_cpu_ms_per_request": 1000 * sum(cpu.values()) / max(result.ok, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2, help="ABBA pairs")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="door-compare-") as tmp, ExitStack() as cleanup:
        stacks = {}
        for name, worker_class in VARIANTS.items():
            stacks[name] = start(name, worker_class, Path(tmp))
            cleanup.callback(stacks[name].stop)
        windows: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
        names = list(VARIANTS)
        for _ in range(args.rounds):
            for name in (*names, *reversed(names)):
                measured = window(stacks[name], args.duration, args.connections)
                windows[name].append(measured)
                print(name, {key: round(value, 2) for key, value in measured.items()}, flush=True)
        for name, stack in stacks.items():
            phase = slow_client_phase(stack.urls["gateway"], duration_s=6.0, probe_timeout_s=5.0)
            medians = {key: statistics.median(w[key] for w in windows[name]) for key in windows[name][0]}
            report[name] = {
                "windows": windows[name],
                "median": medians,
                "slow_clients": {
                    "opened": phase.opened,
                    "probes_answered": len(phase.latencies_s),
                    "probes_failed": len(phase.failures),
                    "worst_answer_s": None if not phase.latencies_s else max(phase.latencies_s),
                    "failures": phase.failures[:3],
                },
            }
            print(name, "median", {k: round(v, 2) for k, v in medians.items()}, flush=True)
            print(name, "slow clients", report[name]["slow_clients"], flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
