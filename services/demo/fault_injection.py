"""Fault and latency injection for ONE request, asked for through W3C baggage.

    curl -H 'baggage: tracehop.fault=users:delay=300ms' ...    # users answers 300 ms later
    curl -H 'baggage: tracehop.fault=worker:error' ...          # the job fails

Baggage travels with the trace context (HTTP headers, Celery message headers), so the service named in
the flag sees it however many hops away it is, and only for that request's trace: anyone can make an
error trace or a slow trace on demand, as HotROD and the OpenTelemetry Demo do with their flags.

Grammar of the `tracehop.fault` value: one or more `service:action[=value]`, separated by `;`
    service  gateway | users | worker
    action   delay=<n>ms | delay=<n>s | delay=<n> (milliseconds), at most MAX_DELAY_S
             error | error=<5xx status> (HTTP services answer that status, default 500; a job fails)
             kill=<point> the process SIGKILLs itself at a named point of its code (KILL_POINTS): a
             crash at an exact moment, for the reliability tests (e.g. gateway:kill=user_created, after
             users created the user and before the welcome job is queued; worker:kill=job_claimed, the
             whole worker right after a job's first delivery claimed its id)
On the wire a raw `;` starts a W3C baggage *property*, so write it percent-encoded (`%3B`), or use `+`
(baggage values are decoded like form data, so `+` becomes a space, which also separates faults).

Off unless TRACEHOP_FAULT_INJECTION is true: a flag any caller can set must not slow down or break a
production service. An invalid flag is logged and ignored, never an error of the request.

Where a fault is applied, the current span gets an event `fault injected` and the attribute
`tracehop.fault.injected` (e.g. `users:delay=300ms`), so the trace says why it is slow or failed.
"""

from __future__ import annotations

import os
import re
import signal
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loguru import logger
from opentelemetry import baggage, trace
from opentelemetry.context import Context

from services.telemetry.logs import NO_SPAN_EVENT
from services.web import settings
from services.web.settings import SERVICES

if TYPE_CHECKING:
    from flask import Flask

ENABLE_VARIABLE = "TRACEHOP_FAULT_INJECTION"
BAGGAGE_KEY = "tracehop.fault"
MAX_DELAY_S = 10.0
EVENT_NAME = "fault injected"
ATTRIBUTE = "tracehop.fault.injected"

_SEPARATORS = re.compile(r"[;\s]+")
_SPEC = re.compile(r"(?P<service>[a-z]+):(?P<action>delay|error|kill)(?:=(?P<value>[0-9a-z._]+))?")
# Where a service calls kill_point(); a name not listed here is an invalid flag.
KILL_POINTS = {"gateway": ("user_created",), "worker": ("job_claimed",)}
_DURATION = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>ms|s)?")


class FaultSpecError(ValueError):
    """The `tracehop.fault` value does not follow the grammar (the message says where)."""


class InjectedFault(Exception):
    """Raised where an `error` fault applies: a failure asked for by the caller, not a bug.

    Its one argument is the fault as written (`worker:error`), and only str() adds the explanation:
    Celery's result backend stores a job's exception as its class and args and rebuilds it with
    cls(*args), so the gateway reads back an equal exception with the same message, not one wrapped twice.
    """

    def __init__(self, fault: Fault | str) -> None:
        self.fault = fault if isinstance(fault, Fault) else parse_faults(fault)[0]
        super().__init__(str(self.fault))

    def __str__(self) -> str:
        return f"fault injected by baggage {BAGGAGE_KEY}: {self.fault}"


@dataclass(frozen=True)
class Fault:
    service: str
    action: str  # "delay", "error" or "kill"
    delay_s: float = 0.0
    status: int = 500
    point: str = ""

    def __str__(self) -> str:
        if self.action == "delay":
            return f"{self.service}:delay={self.delay_s * 1000:g}ms"
        if self.action == "kill":
            return f"{self.service}:kill={self.point}"
        return f"{self.service}:error" + (f"={self.status}" if self.status != 500 else "")


def parse_faults(text: str) -> list[Fault]:
    """All faults of a `tracehop.fault` value, in order; FaultSpecError on anything malformed."""
    faults = []
    for spec in filter(None, _SEPARATORS.split(text.strip().lower())):
        match = _SPEC.fullmatch(spec)
        if match is None:
            raise FaultSpecError(f"{spec!r} is not service:delay=<duration> or service:error[=<status>]")
        service, action, value = match["service"], match["action"], match["value"]
        if service not in SERVICES:
            raise FaultSpecError(f"{spec!r}: unknown service {service!r} (one of {', '.join(SERVICES)})")
        if action == "delay":
            faults.append(Fault(service, "delay", delay_s=_parse_delay(spec, value)))
        elif action == "kill":
            if value not in KILL_POINTS.get(service, ()):
                points = ", ".join(KILL_POINTS.get(service, ())) or "none"
                raise FaultSpecError(
                    f"{spec!r}: {service} has no kill point {value!r} (its points: {points})"
                )
            faults.append(Fault(service, "kill", point=value))
        else:
            faults.append(Fault(service, "error", status=_parse_status(spec, value)))
    if not faults:
        raise FaultSpecError("empty fault specification")
    return faults


def _parse_delay(spec: str, value: str | None) -> float:
    match = _DURATION.fullmatch(value or "")
    if match is None:
        raise FaultSpecError(f"{spec!r}: a delay needs a duration such as 300ms or 1.5s")
    seconds = float(match["number"]) / (1 if match["unit"] == "s" else 1000)
    if seconds > MAX_DELAY_S:
        raise FaultSpecError(f"{spec!r}: at most {MAX_DELAY_S:g} s")
    return seconds


def _parse_status(spec: str, value: str | None) -> int:
    if value is None:
        return 500
    if not value.isdigit() or not 500 <= int(value) <= 599:
        raise FaultSpecError(f"{spec!r}: an error status must be 500..599")
    return int(value)


def enabled() -> bool:
    return settings.env_bool(ENABLE_VARIABLE, False)


def faults_for(service: str, context: Context | None = None) -> list[Fault]:
    """The faults the current request's baggage asks of `service` (an invalid flag: none, logged)."""
    raw = baggage.get_baggage(BAGGAGE_KEY, context)
    if not raw:
        return []
    try:
        faults = parse_faults(str(raw))
    except FaultSpecError as error:
        logger.warning("ignored invalid fault flag", baggage_key=BAGGAGE_KEY, reason=str(error))
        return []
    return [fault for fault in faults if fault.service == service]


def inject_faults(service: str) -> None:
    """Apply what the baggage asks of `service`: sleep for delays, then raise InjectedFault for an error.

    Call it where the request's span is current (Flask before_request, a Celery task's run) so the
    delay lands inside that span and the event marks it.
    """
    for fault in faults_for(service):
        if fault.action == "kill":
            continue  # applies at its kill point only
        _record(fault)
        if fault.action == "delay":
            time.sleep(fault.delay_s)
        else:
            raise InjectedFault(fault)


def kill_point(service: str, point: str) -> None:
    """SIGKILL this process here when TRACEHOP_FAULT_INJECTION allows it and the request's baggage asks
    for `<service>:kill=<point>`: no cleanup, no response, no span flush — what an OOM kill or a power cut
    does at exactly this line. Costs one baggage lookup when fault injection is on, nothing when off."""
    if not enabled():
        return
    for fault in faults_for(service):
        if fault.action == "kill" and fault.point == point:
            _record(fault)
            os.kill(os.getpid(), signal.SIGKILL)


def _record(fault: Fault) -> None:
    span = trace.get_current_span()
    attributes = {"fault.service": fault.service, "fault.action": fault.action, "fault.spec": str(fault)}
    if fault.action == "delay":
        attributes["fault.delay_ms"] = round(fault.delay_s * 1000, 3)
    span.add_event(EVENT_NAME, attributes)
    # Several faults for one service (rare) read as one comma-separated attribute.
    previous = getattr(span, "attributes", {}).get(ATTRIBUTE) if span.is_recording() else None
    span.set_attribute(ATTRIBUTE, f"{previous},{fault}" if previous else str(fault))
    # The span event above already says it: keep the log line out of the span's events.
    logger.bind(**{NO_SPAN_EVENT: True}).warning("fault injected", fault=str(fault))


def install_flask_hook(app: Flask, service: str) -> None:
    """Apply faults before each request of `app`, when TRACEHOP_FAULT_INJECTION allows it.

    Register it AFTER the Flask instrumentation: its own before_request attaches the incoming context
    (and so the baggage) and starts the SERVER span, and before_request functions run in order.
    When disabled nothing is registered, so a production service pays nothing for the feature.
    """
    if not enabled():
        return
    # Here, not at the top: http_errors imports Flask, which the worker (also a user of this module)
    # never needs to load.
    from services.web.http_errors import ApiError

    @app.before_request
    def _inject_faults() -> None:
        try:
            inject_faults(service)
        except InjectedFault as fault:
            raise ApiError(fault.fault.status, "fault_injected", str(fault)) from None
