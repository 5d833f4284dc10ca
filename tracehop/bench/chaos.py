"""`make chaos`: a private stack under a steady load while a script of faults hits it, then full accounting.

    python -m tracehop.bench.chaos                      # the full run: 40 req/s, every fault, ~4 minutes
    python -m tracehop.bench.chaos --short              # a few faults in under a minute (inside `make test`)
    python -m tracehop.bench.chaos --broker amqp        # RabbitMQ as the broker (TRACEHOP_AMQP_URL)

What it does, as an outside tester would:
1. starts a stack of its own (free ports, a temporary directory; never the one `make up` runs);
2. sends `POST /api/users` at a fixed rate, each with an Idempotency-Key, retrying a dropped connection,
   a timeout or a 503 with the same key for up to RETRY_FOR_S, as a careful client does;
3. meanwhile runs the faults one after another — each component SIGKILLed (supervisord restarts it),
   Redis killed and restarted from its append-only file, the trace backend paused (SIGSTOP) — and
   measures for each two times: "service back in", until its SERVICE answers again, whichever process
   answers (service_checks.py: for the worker, jobs complete), which the issue's 2 s target is about;
   and "process replaced in", until a NEW process passes the program's readiness probe;
4. then accounts for everything: responses by status, jobs accepted vs finished (every job that is not
   SUCCESS or FAILURE is listed with its trace id), traces complete or not per fault window.

It writes the result as JSON (bench/chaos.json by default), prints a table, and exits 1 when a job was
lost, 0 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import requests
from rich.console import Console
from rich.table import Table

from tracehop.bench.service_checks import Check, JobsComplete, service_check
from tracehop.stack.config import free_ports
from tracehop.stack.runner import LocalStack
from tracehop.stack.supervisor_client import SupervisorClient

# The stack's ports (no Prometheus): all picked free, so a run never meets `make up`'s stack.
PORT_NAMES = ("gateway", "users", "worker_metrics", "worker_b_metrics", "otlp", "query", "redis")
RETRY_FOR_S = 20.0
REQUEST_TIMEOUT_S = 5.0
# Waiting for the jobs: given up when none finished for this long (a job that comes back through a
# visibility timeout, a lease or the reconciler's doubling deadline needs well under it), or at the most.
JOBS_DEADLINE_S = 120.0
JOBS_WAIT_MAX_S = 600.0
RECOVERY_LIMIT_S = 60.0
# The target: any single process killed, its service answers again within this.
SERVICE_BACK_TARGET_S = 2.0
# The spans a complete `POST /api/users` trace has in each service (OTLP span kinds: 2 server, 5 consumer).
COMPLETE_TRACE = {
    ("gateway", "POST /api/users", 2),
    ("users", "POST /users", 2),
    ("worker", "run/send_welcome_email", 5),
}
STACK_ENV = {
    "GUNICORN_WORKERS": "2",
    "OTEL_BSP_SCHEDULE_DELAY": "500",
    "TRACEHOP_MAIL_LATENCY_MS": "1",
    "TRACEHOP_VISIBILITY_TIMEOUT_S": "30",
    "TRACEHOP_JOB_START_DEADLINE_S": "10",
    "TRACEHOP_RECONCILE_INTERVAL_S": "2",
}


@dataclass(frozen=True)
class Fault:
    name: str
    program: str
    action: str  # "kill" (SIGKILL the program's main process) or "pause" (SIGSTOP for pause_s)
    pause_s: float = 0.0


# One of the worker service's two programs (tracehop/stack/worker_programs.py); the other consumes on.
WORKER_KILLED = "worker main process SIGKILLed (node worker of 2)"
FULL_FAULTS = [
    Fault("gateway master SIGKILLed", "gateway", "kill"),
    Fault("users master SIGKILLed", "users", "kill"),
    Fault(WORKER_KILLED, "worker", "kill"),
    Fault("Redis SIGKILLed (restarts from its AOF)", "redis", "kill"),
    Fault("trace store SIGKILLed", "trace-store", "kill"),
    Fault("beat SIGKILLed", "beat", "kill"),
    Fault("trace store paused 30 s", "trace-store", "pause", 30.0),
]
SHORT_FAULTS = [
    Fault(WORKER_KILLED, "worker", "kill"),
    Fault("users master SIGKILLed", "users", "kill"),
    Fault("Redis SIGKILLed (restarts from its AOF)", "redis", "kill"),
]


@dataclass
class Request:
    index: int
    started: float
    status: int | str = ""
    attempts: int = 0
    statuses: list[str] = field(default_factory=list)
    job_id: str = ""
    trace_id: str = ""
    window: str = "baseline"
    # The 201 was a replay (`Idempotent-Replayed`): an earlier attempt whose answer was lost did the work,
    # so the job ran in THAT attempt's trace, not in this one's.
    replayed: bool = False


@dataclass
class FaultResult:
    name: str
    at_s: float
    # Until the service answers again, whichever process answers (a pause: from SIGCONT).
    service_back_s: float | None = None
    # Until a new process passes the program's readiness probe (None for a pause: nothing is replaced).
    process_replaced_s: float | None = None
    # The target applies to killed processes: None for a pause.
    back_within_target: bool | None = None
    unavailable_s: float = 0.0  # how long the service check failed meanwhile (a pause: + the pause)
    requests: int = 0
    traces_complete: int = 0
    traces_incomplete: int = 0
    replays: int = 0  # 201s that replayed an earlier attempt (not counted as complete or incomplete)
    incomplete_examples: list[str] = field(default_factory=list)  # a few trace ids, to look at


class Chaos:
    def __init__(self, stack: LocalStack, rate: float, console: Console) -> None:
        self.stack = stack
        self.rate = rate
        self.console = console
        self.requests: list[Request] = []
        self.window = "baseline"
        self.run_id = os.urandom(4).hex()
        self.http = requests.Session()
        self.http.trust_env = False
        self.supervisor = SupervisorClient(stack.layout.supervisor_socket, timeout=30)
        env = stack.env
        self.jobs = JobsComplete(
            env.get("CELERY_BROKER_URL") or stack.redis_url,
            stack.redis_url,
            env.get("TRACEHOP_CELERY_QUEUE") or "celery",
            stack.worker_metrics_urls,
        )
        self._lock = threading.Lock()

    # -- the load ----------------------------------------------------------------------------------------

    def load(self, stop: threading.Event, started: float) -> None:
        with ThreadPoolExecutor(max_workers=64) as pool:
            index = 0
            while not stop.is_set():
                due = started + index / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                request = Request(index, time.monotonic() - started, window=self.window)
                with self._lock:
                    self.requests.append(request)
                pool.submit(self._create, request)
                index += 1

    def _create(self, request: Request) -> None:
        key = f"chaos-{self.run_id}-{request.index}"
        body = {"name": "Chaos", "email": f"chaos.{self.run_id}.{request.index}@example.org"}
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            request.attempts += 1
            try:
                response = self.http.post(
                    self.stack.urls["gateway"] + "/api/users",
                    json=body,
                    headers={"Idempotency-Key": key},
                    timeout=REQUEST_TIMEOUT_S,
                )
                outcome: int | str = response.status_code
            except requests.ConnectionError:
                outcome, response = "connection error", None
            except requests.Timeout:
                outcome, response = "timeout", None
            request.statuses.append(str(outcome))
            if response is not None and response.status_code == 201:
                payload = response.json()
                request.status, request.job_id, request.trace_id = 201, payload["job_id"], payload["trace_id"]
                request.replayed = response.headers.get("Idempotent-Replayed") == "true"
                return
            if response is not None and response.status_code not in (502, 503, 504):
                request.status = response.status_code
                return
            if time.monotonic() > deadline:
                request.status = outcome
                return
            time.sleep(0.25)

    # -- the faults --------------------------------------------------------------------------------------

    def warm_up_probes(self, timeout_s: float = 60.0) -> None:
        """One probe job through the worker service before the first fault: the probe's own broker
        connection and the first job's imports are not part of any recovery."""
        deadline = time.monotonic() + timeout_s
        while (problem := self.jobs.check()) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker service runs no probe job: {problem}")

    def pid(self, program: str) -> int:
        info = self.supervisor.process(program)
        return info.pid if info is not None and info.is_running else 0

    def inject(self, fault: Fault, started: float) -> FaultResult:
        result = FaultResult(fault.name, round(time.monotonic() - started, 1))
        self.window = fault.name
        pid = self.pid(fault.program)
        if not pid:  # os.kill(0, …) would signal our own process group
            raise RuntimeError(f"{fault.program} is not RUNNING: cannot inject {fault.name!r}")
        readiness = next(p for p in self.stack.probes() if p.component == fault.program).check
        service = service_check(fault.program, readiness, self.jobs)
        if fault.action == "kill":
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            recovery = self._wait_recovered(service, readiness, fault.program, pid, t0)
            result.service_back_s, result.process_replaced_s, result.unavailable_s = recovery
            if result.service_back_s is not None:
                result.back_within_target = result.service_back_s <= SERVICE_BACK_TARGET_S
        else:
            os.kill(pid, signal.SIGSTOP)
            time.sleep(fault.pause_s)
            os.kill(pid, signal.SIGCONT)
            back, _, unavailable = self._wait_recovered(
                service, readiness, fault.program, 0, time.monotonic()
            )
            result.service_back_s, result.unavailable_s = back, round(unavailable + fault.pause_s, 2)
        return result

    def _wait_recovered(
        self, service: Check, readiness: Check, program: str, old_pid: int, t0: float
    ) -> tuple[float | None, float | None, float]:
        """Seconds until the service answers again for good, until a process other than `old_pid` passes
        the readiness probe (old_pid 0: any process), and how long the service check failed meanwhile.

        "For good": the first answer after the LAST failed check seen before the process was replaced (an
        orphaned gunicorn worker may answer at first and stop before the new master serves)."""
        service_back: float | None = None
        replaced: float | None = None
        unavailable = 0.0
        last = t0
        while time.monotonic() - t0 < RECOVERY_LIMIT_S:
            ready = readiness() is None
            serving = ready if service is readiness else service() is None
            now = time.monotonic()
            if replaced is None:
                new_pid = self.pid(program)
                if ready and (old_pid == 0 or (new_pid and new_pid != old_pid)):
                    replaced = round(now - t0, 2)
            if not serving:
                unavailable += now - last
                service_back = None
            elif service_back is None:
                service_back = round(now - t0, 2)
            last = now
            if service_back is not None and replaced is not None:
                break
            time.sleep(0.05)
        return service_back, replaced if old_pid else None, round(unavailable, 2)

    # -- the accounting ----------------------------------------------------------------------------------

    def job_states(self, job_ids: list[str]) -> dict[str, str]:
        client = redis.Redis.from_url(self.stack.redis_url, decode_responses=True)
        states: dict[str, str] = {}
        for start in range(0, len(job_ids), 500):
            chunk = job_ids[start : start + 500]
            for job_id, raw in zip(chunk, client.mget([f"celery-task-meta-{j}" for j in chunk]), strict=True):
                states[job_id] = json.loads(raw)["status"] if raw else "PENDING"
        return states

    def wait_for_jobs(self, job_ids: list[str]) -> dict[str, str]:
        """Every job's state once all have finished, or once none has finished for JOBS_DEADLINE_S (a
        loaded machine only makes the jobs slower: the wait follows their progress, not the clock), at
        most JOBS_WAIT_MAX_S in all."""
        started = last_progress = time.monotonic()
        finished = -1
        while True:
            states = self.job_states(job_ids)
            done = sum(1 for s in states.values() if s in ("SUCCESS", "FAILURE"))
            now = time.monotonic()
            if done > finished:
                finished, last_progress = done, now
            if (
                done == len(job_ids)
                or now - last_progress > JOBS_DEADLINE_S
                or now - started > JOBS_WAIT_MAX_S
            ):
                return states
            time.sleep(1)

    def complete_traces(self, trace_ids: list[str]) -> set[str]:
        time.sleep(3)  # the last batches of spans
        database = sqlite3.connect(f"file:{self.stack.layout.traces_db}?mode=ro", uri=True)
        found: dict[str, set[tuple[str, str, int]]] = {}
        try:
            for start in range(0, len(trace_ids), 500):
                chunk = trace_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = database.execute(
                    f"SELECT trace_id, service, name, kind FROM spans WHERE trace_id IN ({marks})", chunk
                )
                for trace_id, service, name, kind in rows:
                    found.setdefault(trace_id, set()).add((service, name, kind))
        finally:
            database.close()
        return {trace_id for trace_id, spans in found.items() if spans >= COMPLETE_TRACE}


def run_chaos(
    root: Path, faults: list[Fault], rate: float, gap_s: float, env: dict[str, str], console: Console
) -> dict[str, Any]:
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    stack = LocalStack(root / "var", root / "logs", ports, {**STACK_ENV, **env}, prometheus=False, beat=True)
    console.print(f"starting a private stack in {root} …")
    stack.start(timeout=120)
    try:
        chaos = Chaos(stack, rate, console)
        chaos.warm_up_probes()
        stop = threading.Event()
        started = time.monotonic()
        loader = threading.Thread(target=chaos.load, args=(stop, started), daemon=True)
        loader.start()
        results = []
        time.sleep(gap_s)
        for fault in faults:
            console.print(f"[{time.monotonic() - started:6.1f} s] {fault.name}")
            results.append(chaos.inject(fault, started))
            time.sleep(gap_s)
        stop.set()
        loader.join()
        duration = time.monotonic() - started
        console.print("load stopped; waiting for the last responses and every job …")
        deadline = time.monotonic() + RETRY_FOR_S + REQUEST_TIMEOUT_S + 5
        while any(r.status == "" for r in chaos.requests) and time.monotonic() < deadline:
            time.sleep(0.2)
        try:
            return account(chaos, results, faults, rate, duration, env)
        finally:
            chaos.jobs.close()
    finally:
        stack.stop()


def account(
    chaos: Chaos,
    results: list[FaultResult],
    faults: list[Fault],
    rate: float,
    duration: float,
    env: dict[str, str],
) -> dict[str, Any]:
    requests_ = chaos.requests
    accepted = [r for r in requests_ if r.status == 201]
    states = chaos.wait_for_jobs([r.job_id for r in accepted])
    complete = chaos.complete_traces([r.trace_id for r in accepted])
    by_window = {result.name: result for result in results}
    for request in accepted:
        result = by_window.get(request.window)
        if result is not None:
            result.requests += 1
            if request.replayed:
                result.replays += 1
            elif request.trace_id in complete:
                result.traces_complete += 1
            else:
                result.traces_incomplete += 1
                if len(result.incomplete_examples) < 5:
                    result.incomplete_examples.append(request.trace_id)
    lost = [
        {"job_id": r.job_id, "trace_id": r.trace_id, "state": states.get(r.job_id, "PENDING")}
        for r in accepted
        if states.get(r.job_id) not in ("SUCCESS", "FAILURE")
    ]
    baseline = [r for r in accepted if r.window == "baseline"]
    replays = [r for r in accepted if r.replayed]
    return {
        "config": {
            "rate_per_s": rate,
            "duration_s": round(duration, 1),
            "faults": [asdict(f) for f in faults],
            "broker": "amqp" if env.get("CELERY_BROKER_URL", "").startswith("amqp") else "redis",
            "stack_env": {**STACK_ENV, **{k: v for k, v in env.items() if "URL" not in k}},
        },
        "requests": len(requests_),
        "responses_by_status": dict(Counter(str(r.status) for r in requests_)),
        "attempts_by_outcome": dict(Counter(s for r in requests_ for s in r.statuses)),
        # Where the failed attempts happened: which fault cost callers retries.
        "failed_attempts_by_window": {
            window: dict(
                Counter(s for r in requests_ if r.window == window for s in r.statuses if s != "201")
            )
            for window in ["baseline", *(f.name for f in faults)]
        },
        "unanswered": [r.index for r in requests_ if r.status != 201],
        "jobs": {
            "accepted": len(accepted),
            "success": sum(1 for s in states.values() if s == "SUCCESS"),
            "failure": sum(1 for s in states.values() if s == "FAILURE"),
            "lost": lost,
        },
        "traces": {
            "baseline_complete": sum(1 for r in baseline if r.trace_id in complete),
            "baseline_incomplete": sum(1 for r in baseline if not r.replayed and r.trace_id not in complete),
            "complete": len(complete),
            "incomplete": sum(1 for r in accepted if not r.replayed and r.trace_id not in complete),
            "replays": len(replays),
        },
        "faults": [asdict(result) for result in results],
    }


def report_table(report: dict[str, Any]) -> Table:
    table = Table(
        title=f"chaos: {report['requests']} requests at {report['config']['rate_per_s']:g}/s, "
        f"broker {report['config']['broker']}",
        title_justify="left",
    )
    for column in (
        "fault",
        "at s",
        "service back in s",
        f"≤ {SERVICE_BACK_TARGET_S:g} s",
        "process replaced in s",
        "unavailable s",
        "requests",
        "traces complete",
        "incomplete",
        "replays",
    ):
        table.add_column(column, justify="left" if column == "fault" else "right")
    traces = report["traces"]
    table.add_row(
        "(baseline)",
        *("",) * 5,
        str(traces["baseline_complete"] + traces["baseline_incomplete"]),
        str(traces["baseline_complete"]),
        str(traces["baseline_incomplete"]),
        "",
    )
    for fault in report["faults"]:
        table.add_row(
            fault["name"],
            f"{fault['at_s']:.0f}",
            _seconds(fault["service_back_s"], "never"),
            {True: "met", False: "NOT MET", None: "-"}[fault["back_within_target"]],
            _seconds(fault["process_replaced_s"], "-" if fault["service_back_s"] is not None else "never"),
            f"{fault['unavailable_s']:.2f}",
            str(fault["requests"]),
            str(fault["traces_complete"]),
            str(fault["traces_incomplete"]),
            str(fault["replays"]),
        )
    return table


def _seconds(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.2f}"


def summary_lines(report: dict[str, Any]) -> list[str]:
    jobs = report["jobs"]
    lines = [
        f"responses: {report['responses_by_status']}  (attempts: {report['attempts_by_outcome']})",
        f"jobs: {jobs['accepted']} accepted, {jobs['success']} SUCCESS, {jobs['failure']} FAILURE, "
        f"{len(jobs['lost'])} lost",
    ]
    lines += [f"  LOST job {j['job_id']} ({j['state']}), trace {j['trace_id']}" for j in jobs["lost"]]
    kills = [fault for fault in report["faults"] if fault["back_within_target"] is not None]
    missed = [fault["name"] for fault in report["faults"] if fault["back_within_target"] is False]
    lines.append(
        f"service back within {SERVICE_BACK_TARGET_S:g} s: {len(kills) - len(missed)} of {len(kills)} kills"
        + (f"; NOT MET: {', '.join(missed)}" if missed else "")
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tracehop.bench.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--short", action="store_true", help="three faults at 10 req/s, under a minute")
    parser.add_argument("--rate", type=float, help="requests per second (default 40, 10 with --short)")
    parser.add_argument("--gap", type=float, help="seconds between faults (default 25, 6 with --short)")
    parser.add_argument("--broker", choices=("redis", "amqp"), default="redis")
    parser.add_argument("--out", type=Path, default=Path("bench/chaos.json"))
    args = parser.parse_args(argv)
    console = Console()
    env: dict[str, str] = {}
    if args.broker == "amqp":
        env["CELERY_BROKER_URL"] = os.environ.get("TRACEHOP_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
        env["TRACEHOP_CELERY_QUEUE"] = f"tracehop-chaos-{os.urandom(4).hex()}"
    faults = SHORT_FAULTS if args.short else FULL_FAULTS
    rate = args.rate or (10.0 if args.short else 40.0)
    gap = args.gap or (6.0 if args.short else 25.0)
    directory = Path(tempfile.mkdtemp(prefix="tracehop-chaos-"))
    report = run_chaos(directory, faults, rate, gap, env, console)
    if report["jobs"]["lost"]:
        # The stack's logs and data (the worker's log, Redis's append-only file) say where a job went.
        console.print(f"kept {directory} (logs/, var/) to look into the lost jobs")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(report_table(report))
    for line in summary_lines(report):
        console.print(line)
    console.print(f"written to {args.out}")
    return 1 if report["jobs"]["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
