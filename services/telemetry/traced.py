"""`@traced`: a span around a function, the Python counterpart of Rust's `#[tracing::instrument]`.

    @traced(skip=("name",))
    def create(self, name: str, email: str) -> User: ...

Each call becomes an INTERNAL span that is current while the function runs (so the spans of the Redis or
HTTP calls it makes, and its log lines, land inside it):

- name: the function's `__qualname__` (`UserStore.create`), or `name=`;
- attributes: `code.function.name` (module + qualified name) and one `arg.<name>` per argument, rendered
  by `safe_attributes` (numbers as they are, the rest a short string, e-mail addresses masked). `self`
  and `cls` are left out, so are the names in `skip=` and any name that looks like a credential
  (password, token, secret, authorization, ...): those are never recorded, whatever `skip` says;
- outcome: an exception sets the span status to ERROR and is recorded as the span's `exception` event
  (message masked), then re-raised untouched; `record_result=True` also records the return value as
  `result`. Celery's control-flow exceptions (`Retry`, `Ignore`, `Reject`) are not errors: a retry is
  read from the CONSUMER span's `celery.state`, as everywhere else in tracehop.

Works on plain functions, methods, async functions and Celery task bodies (put it UNDER `@app.task`; with
`bind=True` the task instance arrives as `self` and is skipped). The wrapper keeps the function's
signature, so Celery still checks the arguments of a task call.

Cost: the signature is read once, at decoration; a call maps its arguments by position, renders them only
when the span is being recorded (nothing at all with OTEL_SDK_DISABLED), and enters the span without the
SDK's context-manager layers. See tests/unit/test_traced.py for what each promise looks like.
"""

from __future__ import annotations

import functools
import inspect
import traceback
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue

from services.telemetry.safe_attributes import is_secret_name, mask_emails, safe_text, safe_value

F = TypeVar("F", bound=Callable[..., Any])

# Exceptions Celery uses to steer a task, not failures of the work. Matched by name: a shared module must
# not import Celery (users never loads it).
_CELERY_CONTROL_FLOW = {
    ("celery.exceptions", "Retry"),
    ("celery.exceptions", "Ignore"),
    ("celery.exceptions", "Reject"),
}


@overload
def traced(func: F, /) -> F: ...
@overload
def traced(
    *, name: str | None = None, skip: Iterable[str] = (), record_result: bool = False
) -> Callable[[F], F]: ...


def traced(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    skip: Iterable[str] = (),
    record_result: bool = False,
) -> F | Callable[[F], F]:
    """Trace every call of the decorated function as an INTERNAL span. Use bare or with options."""

    def decorate(fn: F) -> F:
        return _wrap(fn, name=name, skip=frozenset(skip), record_result=record_result)

    return decorate(func) if func is not None else decorate


def _wrap(fn: Any, *, name: str | None, skip: frozenset[str], record_result: bool) -> Any:
    # @traced above @staticmethod/@classmethod: trace the function inside and wrap it the same way again.
    if isinstance(fn, staticmethod | classmethod):
        return type(fn)(_wrap(fn.__func__, name=name, skip=skip, record_result=record_result))
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        # The span would end when the generator is created, before any of its work: a misleading trace.
        raise TypeError(f"@traced does not support generator functions ({fn.__qualname__})")

    plan = _ArgumentPlan(fn, skip)
    span_name = name or fn.__qualname__
    # One tracer per module, like `tracing`'s target: the backend shows where a span was declared. It is
    # a proxy until the process installs its provider (after the fork), then resolves once.
    tracer = trace.get_tracer(fn.__module__)

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            span = tracer.start_span(span_name, kind=SpanKind.INTERNAL)
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                if span.is_recording():
                    span.set_attributes(plan.attributes(args, kwargs))
                result = await fn(*args, **kwargs)
                if record_result and span.is_recording():
                    span.set_attribute("result", safe_value(result))
                return result
            except Exception as exc:
                _record_failure(span, exc)
                raise
            finally:
                otel_context.detach(token)
                span.end()

        wrapper: Any = async_wrapper
    else:

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            span = tracer.start_span(span_name, kind=SpanKind.INTERNAL)
            token = otel_context.attach(trace.set_span_in_context(span))
            try:
                if span.is_recording():
                    span.set_attributes(plan.attributes(args, kwargs))
                result = fn(*args, **kwargs)
                if record_result and span.is_recording():
                    span.set_attribute("result", safe_value(result))
                return result
            except Exception as exc:
                _record_failure(span, exc)
                raise
            finally:
                otel_context.detach(token)
                span.end()

        wrapper = sync_wrapper

    # Celery builds its argument check from the task function's signature without following
    # `__wrapped__`; an explicit `__signature__` keeps that check (and `inspect.signature`) truthful.
    wrapper.__signature__ = plan.signature
    return wrapper


def _record_failure(span: Span, exc: Exception) -> None:
    if not span.is_recording():
        return
    exc_type = type(exc)
    if (exc_type.__module__, exc_type.__qualname__) in _CELERY_CONTROL_FLOW:
        return
    message = safe_text(str(exc))
    # The SDK's own `exception` event, with the message masked like any other attribute.
    span.record_exception(
        exc,
        attributes={
            "exception.message": message,
            # A traceback keeps its length (paid for only on errors) but not the addresses in it.
            "exception.stacktrace": mask_emails("".join(traceback.format_exception(exc))),
        },
        escaped=True,
    )
    span.set_status(StatusCode.ERROR, f"{exc_type.__name__}: {message}")


class _ArgumentPlan:
    """Which attribute each argument becomes, worked out once from the signature."""

    def __init__(self, fn: Callable[..., Any], skip: frozenset[str]) -> None:
        self.signature = inspect.signature(fn)
        params = list(self.signature.parameters.values())
        unknown = skip - {p.name for p in params}
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in params):
            # A typo in skip= would silently record what it meant to hide.
            raise TypeError(f"@traced(skip=...) names no parameter of {fn.__qualname__}: {sorted(unknown)}")

        def key(param: inspect.Parameter, position: int) -> str | None:
            if position == 0 and param.name in ("self", "cls"):
                return None
            if param.name in skip or is_secret_name(param.name):
                return None
            return f"arg.{param.name}"

        self.static: dict[str, AttributeValue] = {"code.function.name": f"{fn.__module__}.{fn.__qualname__}"}
        self.positional: list[str | None] = []  # attribute key by position (None: not recorded)
        self.keyword: dict[str, str | None] = {}  # attribute key by keyword name
        self.var_positional: str | None = None  # key for extra positional arguments (*args)
        self.var_keyword = False  # whether unknown keywords are arguments of **kwargs
        self.skip = skip
        for position, param in enumerate(params):
            attribute = key(param, position)
            if param.kind is param.VAR_POSITIONAL:
                self.var_positional = attribute
                continue
            if param.kind is param.VAR_KEYWORD:
                self.var_keyword = True
                continue
            if param.kind is not param.KEYWORD_ONLY:
                self.positional.append(attribute)
            if param.kind is not param.POSITIONAL_ONLY:
                self.keyword[param.name] = attribute
            # A default is rendered once, here; an argument actually passed overwrites it per call.
            if attribute and param.default is not param.empty:
                self.static[attribute] = safe_value(param.default)

    def attributes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, AttributeValue]:
        attributes = dict(self.static)
        for attribute, value in zip(self.positional, args, strict=False):
            if attribute:
                attributes[attribute] = safe_value(value)
        if len(args) > len(self.positional) and self.var_positional:
            attributes[self.var_positional] = safe_value(args[len(self.positional) :])
        for keyword, value in kwargs.items():
            if keyword in self.keyword:
                attribute = self.keyword[keyword]
            elif self.var_keyword and keyword not in self.skip and not is_secret_name(keyword):
                attribute = f"arg.{keyword}"
            else:
                attribute = None
            if attribute:
                attributes[attribute] = safe_value(value)
        return attributes
