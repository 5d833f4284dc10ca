"""Structured logs: loguru, one flat JSON object per line, carrying the current trace and span ids.

Each line goes to stdout and to `$TRACEHOP_LOG_DIR/<service>.log`, which the log collector (Alloy, or
Promtail for older setups) tails into Loki. The fields are flat (no nesting) so LogQL's `| json` and the
collector's JSON stage see `trace_id`, `level`, `status`, … directly.

Standard-library logging (Flask/werkzeug, gunicorn, Celery, kombu, urllib3) is routed into the same
sink, so a line Celery writes while a job runs carries that job's trace id too.

Log events in spans: a log call made while a span is current also becomes an event ON that span (the
document's `info!("Fetching user")` inside `#[instrument]`): event name = the message, attributes =
`log.severity` plus the call's own fields, rendered by `safe_attributes` (credentials left out, e-mail
addresses masked). Jaeger then shows a step's log lines inside the step. It happens in loguru's patcher,
which runs once per emitted record whatever the number of sinks, on the caller's thread (so the span is
the right one). Calls below the log level are dropped before the patcher: they make no event either.
`TRACEHOP_LOG_SPAN_EVENTS=false` turns it off.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from datetime import UTC
from pathlib import Path
from typing import Any

from loguru import logger
from opentelemetry import trace

from services.telemetry.safe_attributes import is_secret_name, safe_text, safe_value
from services.web import settings

# Bind this extra field to True (`logger.bind(**{NO_SPAN_EVENT: True})`) for a line that must not become a
# span event. The leading underscore keeps it out of the JSON line.
NO_SPAN_EVENT = "_no_span_event"

# Fields of every record that the span already knows (its ids, its service) or that are ours.
_NOT_EVENT_ATTRIBUTES = frozenset({"service", "trace_id", "span_id", "logger"})

_configured_for: tuple[str, int] | None = None


def configure_logging(service: str, *, level: str | None = None, to_file: bool = True) -> None:
    """Send loguru and stdlib logging to stdout and logs/<service>.log as flat JSON lines.

    Safe to call again in a forked child: the sinks are re-opened in the new process.
    """
    global _configured_for
    if _configured_for == (service, os.getpid()):
        return
    level = (level or settings.log_level()).upper()
    logger.remove()
    logger.configure(extra={"service": service})
    install_record_patcher()
    logger.add(sys.stdout, level=level, format=_format, colorize=False, backtrace=False, diagnose=False)
    if to_file:
        log_dir = Path(settings.log_dir())
        log_dir.mkdir(parents=True, exist_ok=True)
        # Several gunicorn workers append to one file: every line is one write() in append mode, which
        # the kernel keeps whole, so lines never interleave.
        logger.add(
            log_dir / f"{service}.log",
            level=level,
            format=_format,
            colorize=False,
            backtrace=False,
            diagnose=False,
            buffering=1,
        )
    route_stdlib_logging(level)
    _configured_for = (service, os.getpid())


def install_record_patcher(*, span_events: bool | None = None) -> None:
    """Give every loguru record the current trace context, and copy it onto the span as an event.

    `span_events` defaults to TRACEHOP_LOG_SPAN_EVENTS (true), read once here rather than per record.
    configure_logging() calls this; tests call it to get the services' behaviour without the sinks.
    """
    if span_events is None:
        span_events = settings.log_span_events()
    logger.configure(patcher=_patch_with_span_events if span_events else _add_trace_context)


def _add_trace_context(record: dict[str, Any]) -> trace.Span | None:
    """Stamp trace_id/span_id on the record; return the current span when there is a valid one."""
    span = trace.get_current_span()
    context = span.get_span_context()
    if context.is_valid:
        record["extra"]["trace_id"] = trace.format_trace_id(context.trace_id)
        record["extra"]["span_id"] = trace.format_span_id(context.span_id)
        return span
    record["extra"].setdefault("trace_id", "")
    record["extra"].setdefault("span_id", "")
    return None


class _Reentry(threading.local):
    active = False


# The SDK may log while we add an event (e.g. a warning about the span); that log call comes back through
# this patcher on the same thread, and must not try to add an event again.
_reentry = _Reentry()


def _patch_with_span_events(record: dict[str, Any]) -> None:
    span = _add_trace_context(record)
    # is_recording() is False for a non-sampled span and for one already ended but still current
    # (e.g. a line written in a Flask teardown): adding an event there would only make the SDK warn.
    if span is None or not span.is_recording() or record["extra"].get(NO_SPAN_EVENT) or _reentry.active:
        return
    _reentry.active = True
    try:
        span.add_event(safe_text(record["message"]), span_event_attributes(record))
    except Exception:  # logging must never fail because of tracing
        pass
    finally:
        _reentry.active = False


def span_event_attributes(record: dict[str, Any]) -> dict[str, Any]:
    """The attributes of the span event made from one loguru record."""
    attributes: dict[str, Any] = {"log.severity": record["level"].name}
    extra = record["extra"]
    for key, value in extra.items():
        if key in _NOT_EVENT_ATTRIBUTES or key.startswith("_") or is_secret_name(key):
            continue
        attributes[key] = safe_value(value)
    if extra.get("logger"):  # a stdlib record (Celery, gunicorn, ...): say whose
        attributes["log.logger"] = extra["logger"]
    if record["exception"] is not None and record["exception"].type is not None:
        attributes["exception.type"] = record["exception"].type.__name__
    return attributes


def json_line(record: dict[str, Any]) -> str:
    """The JSON object written for one loguru record."""
    extra = record["extra"]
    line: dict[str, Any] = {
        "ts": record["time"].astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "level": record["level"].name,
        "service": extra.get("service", ""),
        "message": record["message"],
        "logger": extra.get("logger") or record["name"],
        "trace_id": extra.get("trace_id", ""),
        "span_id": extra.get("span_id", ""),
    }
    for key, value in extra.items():
        if key not in line and not key.startswith("_"):
            line[key] = value
    if record["exception"] is not None:
        exc_type, exc_value, _ = record["exception"]
        line["exception"] = f"{exc_type.__name__}: {exc_value}" if exc_type else str(exc_value)
    return json.dumps(line, default=str, ensure_ascii=False)


def _format(record: dict[str, Any]) -> str:
    # loguru treats a callable's return value as a format template: stash the finished line in `extra`
    # and return a template that prints only it (braces in messages are then never interpreted).
    record["extra"]["_json"] = json_line(record)
    return "{extra[_json]}\n"


class RepeatLimiter(logging.Filter):
    """Lets a given message through at most once per `interval_s`, counting what it held back.

    While the trace backend is down, the OTLP exporter logs every failed batch (several a second per
    process); one line per half minute says the same without burying the application's own logs.
    """

    def __init__(self, prefixes: tuple[str, ...], interval_s: float = 30.0) -> None:
        super().__init__()
        self.prefixes, self.interval_s = prefixes, interval_s
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        last, held_back = self._last.get(key, (float("-inf"), 0))
        if now - last < self.interval_s:
            self._last[key] = (last, held_back + 1)
            return False
        self._last[key] = (now, 0)
        if held_back:
            record.msg = f"{record.msg} (and {held_back} more like it in the last {self.interval_s:.0f} s)"
        return True


class InterceptHandler(logging.Handler):
    """Hands stdlib log records to loguru (the pattern from loguru's documentation)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.bind(logger=record.name).opt(exception=record.exc_info).log(level, record.getMessage())


def route_stdlib_logging(level: str) -> None:
    root = logging.getLogger()
    handler = InterceptHandler()
    handler.addFilter(RepeatLimiter(prefixes=("opentelemetry.",)))
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("gunicorn.error", "celery", "celery.task", "werkzeug", "kombu"):
        named = logging.getLogger(name)
        named.handlers = []
        named.propagate = True
    # One line per request is written by the app itself (with route, status and duration): the
    # servers' own access logs would only duplicate it.
    logging.getLogger("gunicorn.access").disabled = True
    logging.getLogger("werkzeug").setLevel("WARNING")
    # urllib3 logs every new connection at DEBUG/INFO; noise at any load.
    logging.getLogger("urllib3").setLevel("WARNING")
