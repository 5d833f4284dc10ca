"""`make traffic`: a bounded, realistic mix of requests against the gateway, and the trace id of each.

The gateway starts every trace (no traceparent is sent); the trace id comes back in the JSON body or the
W3C `traceresponse` header. The run is saved to $TRACEHOP_VAR_DIR/last_traffic.json: `make trace` without an
id shows the latest `POST /api/users` in the trace store, or this run's last one when the store does not have
it yet (its spans wait up to the export delay in the services' batch queues).

`--faults` sends instead a few requests that carry a fault flag in their baggage (`tracehop.fault`, see
services/demo/fault_injection.py): a slow trace and error traces on demand. The services apply them
only where TRACEHOP_FAULT_INJECTION is on, which `make up` turns on for its local stack.
"""

from __future__ import annotations

import json
import random
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

DEFAULT_COUNT = 30
REQUEST_TIMEOUT = 10.0

# The order requests are sent in, repeated until `count` is reached. It starts with a create so that
# the reads, reports and job polls after it have a user and a job to ask about; roughly a third of
# the traffic writes, a third reads (one in ten a missing user: a 404), a third is about jobs.
PATTERN = ("create", "get", "create", "report", "job", "get", "missing", "create", "job", "report")

# What a healthy stack answers to each kind of request.
EXPECTED_STATUS = {"create": 201, "get": 200, "missing": 404, "report": 202, "job": 200}

# The worker's simulated mail delivery defers the first attempt to this domain, so that job retries.
GREYLISTED_DOMAIN = "greylisted.example"

FIRST_NAMES = ("Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger", "Radia")


class TrafficError(RuntimeError):
    """The traffic could not be sent (gateway unreachable, ...)."""


@dataclass
class TrafficRecord:
    method: str
    path: str
    status: int
    trace_id: str
    expected_status: int
    note: str = ""

    @property
    def as_expected(self) -> bool:
        return self.status == self.expected_status


def plan_requests(count: int) -> list[str]:
    """The kinds of the `count` requests, in sending order."""
    if count < 1:
        raise ValueError("count must be at least 1")
    return [PATTERN[index % len(PATTERN)] for index in range(count)]


def trace_id_of(response: requests.Response) -> str:
    """The trace id from the JSON body, else from `traceresponse: 00-<trace id>-<span id>-<flags>`."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("trace_id"), str) and body["trace_id"]:
        return body["trace_id"]
    parts = response.headers.get("traceresponse", "").split("-")
    return parts[1] if len(parts) == 4 else ""


class TrafficRun:
    """Sends the planned requests one after the other and keeps what each one answered."""

    def __init__(
        self, base_url: str, session: requests.Session | None = None, seed: int | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = session or requests.Session()
        self.rng = random.Random(seed)
        self.run_token = f"{self.rng.randrange(16**6):06x}"
        self.user_ids: list[str] = []
        self.job_ids: list[str] = []
        self.records: list[TrafficRecord] = []
        self._creates = 0
        self._job_polls = 0

    def send(self, kind: str) -> TrafficRecord:
        handler: Callable[[], TrafficRecord] = {
            "create": self._create_user,
            "get": self._get_user,
            "missing": self._get_missing_user,
            "report": self._ask_report,
            "job": self._poll_job,
        }[kind]
        # Reads and reports need a user first; if every create so far failed, create instead.
        if kind in ("get", "report") and not self.user_ids:
            handler = self._create_user
        if kind == "job" and not self.job_ids:
            handler = self._create_user
        record = handler()
        self.records.append(record)
        return record

    def _create_user(self) -> TrafficRecord:
        self._creates += 1
        name = self.rng.choice(FIRST_NAMES)
        domain = GREYLISTED_DOMAIN if self._creates == 1 else "example.com"
        email = f"{name.lower()}.{self.run_token}.{self._creates}@{domain}"
        # An Idempotency-Key per user: the request can be sent again safely (one retry below).
        key = f"traffic-{self.run_token}-{self._creates}"
        response = self._request(
            "POST",
            "/api/users",
            json={"name": name, "email": email},
            headers={"Idempotency-Key": key},
            retry=True,
        )
        body = _json(response)
        user = body.get("user") or {}
        if response.status_code == 201 and user.get("id") is not None:
            self.user_ids.append(str(user["id"]))
        if body.get("job_id"):
            self.job_ids.append(str(body["job_id"]))
        return self._record(response, "create", email if response.ok else _error_note(body))

    def _get_user(self) -> TrafficRecord:
        response = self._request("GET", f"/api/users/{self.rng.choice(self.user_ids)}")
        return self._record(response, "get", "" if response.ok else _error_note(_json(response)))

    def _get_missing_user(self) -> TrafficRecord:
        # Far beyond any id a local run creates: a read of a user that does not exist.
        response = self._request("GET", f"/api/users/{900_000_000 + self.rng.randrange(1_000_000)}")
        return self._record(response, "missing", _error_note(_json(response)))

    def _ask_report(self) -> TrafficRecord:
        response = self._request("POST", f"/api/users/{self.rng.choice(self.user_ids)}/report")
        body = _json(response)
        if body.get("job_id"):
            self.job_ids.append(str(body["job_id"]))
        return self._record(response, "report", "report queued" if response.ok else _error_note(body))

    def _poll_job(self) -> TrafficRecord:
        # Oldest jobs first: they are the likeliest to have finished.
        job_id = self.job_ids[self._job_polls % len(self.job_ids)]
        self._job_polls += 1
        response = self._request("GET", f"/api/jobs/{job_id}")
        body = _json(response)
        return self._record(
            response, "job", f"state {body.get('state', '?')}" if response.ok else _error_note(body)
        )

    def _request(self, method: str, path: str, retry: bool = False, **kwargs: Any) -> requests.Response:
        """`retry`: send once more after a dropped connection (only for requests safe to repeat)."""
        try:
            try:
                return self.session.request(method, self.base_url + path, timeout=REQUEST_TIMEOUT, **kwargs)
            except requests.ConnectionError:
                if not retry:
                    raise
                return self.session.request(method, self.base_url + path, timeout=REQUEST_TIMEOUT, **kwargs)
        except requests.ConnectionError:
            raise TrafficError(
                f"the gateway does not answer at {self.base_url}: is the stack running? (make up)"
            ) from None
        except requests.Timeout:
            raise TrafficError(f"{method} {path} got no answer within {REQUEST_TIMEOUT:.0f}s") from None

    def _record(self, response: requests.Response, kind: str, note: str) -> TrafficRecord:
        request = response.request
        return TrafficRecord(
            method=request.method or "",
            path=request.path_url,
            status=response.status_code,
            trace_id=trace_id_of(response),
            expected_status=EXPECTED_STATUS[kind],
            note=note,
        )


def wait_for_job(
    http: requests.Session, gateway: str, job_id: str, timeout_s: float = 30.0
) -> dict[str, Any]:
    """GET /api/jobs/<job_id> until the job has finished (SUCCESS or FAILURE): its last answer.

    TimeoutError past the deadline, naming the state the job was left in.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        body = http.get(f"{gateway.rstrip('/')}/api/jobs/{job_id}", timeout=REQUEST_TIMEOUT).json()
        if body.get("state") in ("SUCCESS", "FAILURE"):
            return body
        if time.monotonic() > deadline:
            state = body.get("state")
            raise TimeoutError(f"job {job_id} not finished within {timeout_s:g} s (state {state})")
        time.sleep(0.1)


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_note(body: dict[str, Any]) -> str:
    return str(body.get("message") or body.get("error") or "")


@dataclass(frozen=True)
class FaultRequest:
    """One request of `--faults`: what to send, the flag it carries, and what the stack should answer."""

    kind: str  # a TrafficRun kind: create, get, report, ...
    flag: str  # the tracehop.fault value
    expected_status: int
    effect: str


# A slow trace, a failed job, a failed request, a slow job, and two faults at once. Order matters: the
# first create leaves a user for the report and the read.
FAULT_PLAN = (
    FaultRequest("create", "users:delay=300ms", 201, "users answers 300 ms late: a slow trace"),
    FaultRequest("create", "worker:error", 201, "the welcome job fails: an error in the worker"),
    FaultRequest("create", "users:error", 503, "users fails, so the gateway answers 503"),
    FaultRequest("report", "worker:delay=500ms", 202, "the report job runs 500 ms longer"),
    FaultRequest("get", "gateway:delay=100ms;users:delay=100ms", 200, "two hops slowed down by one flag"),
)


def fault_baggage(flag: str) -> str:
    """The `baggage` header carrying `flag`: W3C baggage reserves a raw `;` (properties) and `,`
    (entries), so the value is percent-encoded; the services decode it back."""
    return "tracehop.fault=" + urllib.parse.quote(flag, safe=":=.")


def send_with_fault(run: TrafficRun, request: FaultRequest) -> TrafficRecord:
    run.session.headers["baggage"] = fault_baggage(request.flag)
    try:
        record = run.send(request.kind)
    finally:
        del run.session.headers["baggage"]
    record.expected_status = request.expected_status
    record.note = f"{request.flag} → {request.effect}"
    return record


def run_fault_traffic(
    base_url: str, console: Console, seed: int | None = None, session: requests.Session | None = None
) -> list[TrafficRecord]:
    """Send FAULT_PLAN's requests, one after the other; raises TrafficError when the gateway is down."""
    run = TrafficRun(base_url, session=session, seed=seed)
    for request in FAULT_PLAN:
        record = send_with_fault(run, request)
        console.print(f"{record.method} {record.path} → {record.status}  [dim]{escape(record.note)}[/]")
    return run.records


def run_traffic(base_url: str, count: int, console: Console, seed: int | None = None) -> list[TrafficRecord]:
    """Send `count` requests with a progress bar; raises TrafficError when the gateway is unreachable."""
    run = TrafficRun(base_url, seed=seed)
    progress = Progress(
        TextColumn("sending traffic"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console,
    )
    with progress:
        task = progress.add_task("", total=count)
        for kind in plan_requests(count):
            record = run.send(kind)
            progress.update(task, advance=1, description=f"{record.method} {record.path} → {record.status}")
    return run.records


def traffic_table(records: Sequence[TrafficRecord]) -> Table:
    # The trace ids are what a person copies from this table: never cut, and nothing but short fixed columns
    # before them. The request (and its note) comes last, where it can wrap on a narrow terminal.
    table = Table(
        title="traffic: one trace per request",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        collapse_padding=True,
        pad_edge=False,
    )
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("status", justify="right", no_wrap=True)
    table.add_column("trace id", no_wrap=True, min_width=32)
    table.add_column("request", overflow="fold")
    for number, record in enumerate(records, start=1):
        style = "green" if record.as_expected else "red"
        request = f"{record.method} {escape(record.path)}"
        if record.note:
            request += f"\n[dim]{escape(record.note)}[/]"
        table.add_row(
            str(number),
            f"[{style}]{record.status}[/]",
            record.trace_id or "[dim](none)[/]",
            request,
        )
    return table


def latest_saved_create(path: Path) -> tuple[str, float] | None:
    """(trace id, time the run finished) of the last successful `POST /api/users` a saved run sent, or None
    (no run saved, or an unreadable file: `make trace` then asks the trace store alone)."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        creates = [
            r["trace_id"]
            for r in document["requests"]
            if r["method"] == "POST" and r["path"] == "/api/users" and r["status"] == 201 and r["trace_id"]
        ]
        return (creates[-1], float(document["finished_at"])) if creates else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def save_traffic(path: Path, base_url: str, records: Sequence[TrafficRecord]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"base_url": base_url, "finished_at": time.time(), "requests": [asdict(r) for r in records]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
