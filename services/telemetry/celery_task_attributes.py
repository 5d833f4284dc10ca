"""The Celery instrumentation's task attributes, set by a table instead of an if/elif chain per key.

Why this module exists: for every job the stock Celery instrumentation (opentelemetry-instrumentation-
celery 0.66b1) calls `utils.set_attributes_from_context` three times (the publish signal's arguments on the
PRODUCER span; the postrun signal's arguments and the task's request on the CONSUMER span). Each call walks
all 19 names of `CELERY_CONTEXT_ATTRIBUTES` and, for every name with a value, runs a chain of up to eight
string comparisons to find out how that name is turned into an attribute: about 10 µs per call on a task
request (one process, load ~10). The outcome depends only on the name, so here it is looked up in a table
built once; the value tests and conversions are the stock function's own, in the same order, and the
attributes are set in the same order, so the spans are the same. No option or hook of the instrumentation
changes this (its signal receivers call the function directly): the instrumentation module's reference to
its `utils` module is pointed at a namespace that overrides this one function and hands every other name
to the real module, so nothing else that imports `utils` is affected.

The internals are not an API: `install()` refuses to run (RuntimeError, at start-up) unless the installed
instrumentation is exactly the version this was checked against (requirements.lock), and
tests/unit/test_celery_task_attributes_differential.py requires the same attributes as the stock function
for hypothesis-generated task requests and signal arguments, and the same spans for real jobs published
and run through Celery. Only tracehop's setup installs it (TRACEHOP_LEAN_INSTRUMENTATION); `stock` stays
OpenTelemetry's own.
"""

from __future__ import annotations

import types
from importlib.metadata import version
from typing import Any

import opentelemetry.instrumentation.celery as otel_celery
from opentelemetry.instrumentation.celery import utils as otel_celery_utils
from opentelemetry.semconv._incubating.attributes.messaging_attributes import MESSAGING_MESSAGE_ID
from opentelemetry.semconv.trace import SpanAttributes

CHECKED_VERSIONS = {"opentelemetry-instrumentation-celery": "0.66b1"}

# What the stock function does with each name: (kind, attribute name). Plain names become `celery.<name>`.
_PLAIN, _TIMELIMIT, _RETRIES, _DELIVERY_INFO, _DECLARE = range(5)
_SPECIAL = {
    "timelimit": (_TIMELIMIT, "celery.timelimit"),
    "retries": (_RETRIES, "celery.retries"),
    "origin": (_PLAIN, "celery.hostname"),
    "delivery_info": (_DELIVERY_INFO, "celery.delivery_info"),
    "id": (_PLAIN, MESSAGING_MESSAGE_ID),
    "correlation_id": (_PLAIN, SpanAttributes.MESSAGING_CONVERSATION_ID),
    "routing_key": (_PLAIN, SpanAttributes.MESSAGING_DESTINATION),
    "declare": (_DECLARE, SpanAttributes.MESSAGING_DESTINATION_KIND),
}
_TABLE = tuple(
    (key, *_SPECIAL.get(key, (_PLAIN, f"celery.{key}")))
    for key in otel_celery_utils.CELERY_CONTEXT_ATTRIBUTES
)


def check_versions() -> None:
    """Fail loudly when the installed instrumentation is not the version this module was checked against."""
    wrong = {name: version(name) for name in CHECKED_VERSIONS if version(name) != CHECKED_VERSIONS[name]}
    if wrong:
        raise RuntimeError(
            f"services/telemetry/celery_task_attributes.py replaces internals of {CHECKED_VERSIONS}, "
            f"but {wrong} is installed: check the replacement against the new version (and its "
            "differential test), then update CHECKED_VERSIONS"
        )


def set_attributes_from_context(span: Any, context: Any) -> None:
    """The stock `utils.set_attributes_from_context`, each name's handling looked up instead of searched."""
    if not span.is_recording():
        return
    get = context.get
    set_attribute = span.set_attribute
    for key, kind, attribute_name in _TABLE:
        value = get(key)
        if value is None or value == "":
            continue
        if kind == _PLAIN:
            set_attribute(attribute_name, value)
            continue
        if kind == _TIMELIMIT:
            if value in [(None, None), [None, None]]:
                continue
            if None in value:
                value = ["" if tl is None else str(tl) for tl in value]
        elif kind == _RETRIES:
            if value == 0:
                continue
        elif kind == _DELIVERY_INFO:
            routing_key = value.get("routing_key")
            if routing_key is not None:
                set_attribute(SpanAttributes.MESSAGING_DESTINATION, routing_key)
            value = str(value)
        else:  # _DECLARE
            for declare in value:
                if declare.exchange.type == "direct":
                    value = "queue"
                    break
                if declare.exchange.type == "topic":
                    value = "topic"
                    break
        set_attribute(attribute_name, value)


def celery_utils() -> types.ModuleType:
    """The instrumentation's `utils` module as it should see it: ours for one function, the rest its own."""
    namespace = types.ModuleType("tracehop_otel_celery_utils")
    # The real module's names copied (a module-level __getattr__ alone costs ~3 µs per lookup, and the
    # instrumentation looks up about ten per job), and __getattr__ for any name it gains later.
    namespace.__dict__.update({k: v for k, v in vars(otel_celery_utils).items() if not k.startswith("__")})
    namespace.__getattr__ = lambda name: getattr(otel_celery_utils, name)  # type: ignore[method-assign]
    namespace.set_attributes_from_context = set_attributes_from_context  # type: ignore[attr-defined]
    return namespace


def install() -> None:
    check_versions()
    if otel_celery.utils.__name__ not in (otel_celery_utils.__name__, "tracehop_otel_celery_utils"):
        raise RuntimeError("the Celery instrumentation no longer calls its helpers through `utils`")
    otel_celery.utils = celery_utils()


def uninstall() -> None:
    """The instrumentation's own helpers again (tests compare both in one process)."""
    otel_celery.utils = otel_celery_utils
