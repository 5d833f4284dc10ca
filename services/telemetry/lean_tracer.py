"""The SDK's tracer provider with cheaper span creation: the same spans, fewer instructions per span.

`tracehop.bench.spancost` shows where a traced request's extra CPU goes: after the instrumentations'
own work, the biggest single share is the SDK's `Tracer.start_span` and `Span.end` (about 15 µs for a
bare span on these machines, 9 spans per request). Most of it is generality our spans never use. This
module subclasses the SDK's classes and overrides only those hot paths; everything else (limits,
events, links, status, exceptions, processors, export) is the SDK's own code:

- `start_span` reads the parent span once (the SDK reads it three times: itself, `ParentBased`, and
  `_get_parent_trace_state`) and, for the default sampler (`parentbased_always_on`, the SDK's
  `DEFAULT_ON` object), makes the decision that sampler would make inline; any other sampler is called
  exactly as the SDK calls it. Trace flags are prebuilt instead of constructed per span.
- `LeanSpan.__init__` assigns the fields the SDK's `Span.__init__` → `ReadableSpan.__init__` chain
  assigns, without the keyword-argument plumbing, and creates the event and link lists (a lock and a
  deque each) only when a span gets its first event or link: most spans get neither.
- `LeanSpan.end` hands the span itself to the processors instead of a `ReadableSpan` copy: the copy
  shares the span's attribute, event and link containers anyway, and an ended span refuses every change.
- `LeanSpan.set_attribute` stores a str/bool/int/float value directly (under the same locks) when the
  SDK's cleaning would return it unchanged (no string-length limit for a str); anything else goes
  through the SDK's path.
- `LeanSpan.add_event` takes an event's attribute dict as it is when the SDK's cleaning would keep every
  key and value unchanged (log lines become events with such dicts); anything else, the SDK's path.
- `LeanSpanProcessor` calls `on_start` / `_on_ending` / `on_end` only on the processors that do
  something there (the batch processor has nothing to do on start, the baggage processor on end).

`tests/unit/test_lean_tracer_differential.py` runs random sequences of API operations (attributes of
every type, invalid ones and limits from the OTEL_* variables, events, links, status, exceptions,
update_name, double end, samplers, remote and local parents) through the SDK and through this, and
requires the same spans to reach the exporter. setup.py uses it in tracehop mode only; the `stock`
setup stays the SDK as documented.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import (
    Event,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    Tracer,
    TracerProvider,
    _check_span_ended,
    _Span,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import DEFAULT_ON, Decision, SamplingResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace.span import TraceFlags
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types

logger = logging.getLogger("opentelemetry.sdk.trace")  # the SDK's logger: the same warnings, same place

# ReadableSpan's default status: one shared, immutable object, as in the SDK.
_UNSET = Status(StatusCode.UNSET)
_NO_ITEMS: tuple = ()
# Values the SDK's _clean_attribute_value returns unchanged (str only without a length limit).
_PLAIN_VALUES = frozenset({str, bool, int, float})
# (sampled, random trace id) -> flags: the four TraceFlags the SDK builds anew for every span.
_FLAGS = {
    (sampled, random_id): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if random_id else 0)
    )
    for sampled in (False, True)
    for random_id in (False, True)
}


class LeanSpan(_Span):
    """The SDK's span, with a cheaper constructor, end, set_attribute and lazily created event/link lists."""

    def __init__(
        self,
        name: str,
        context: trace_api.SpanContext,
        parent: trace_api.SpanContext | None,
        sampler,
        resource,
        attributes: types.Attributes,
        span_processor: SpanProcessor,
        kind: trace_api.SpanKind,
        links: Sequence[trace_api.Link],
        instrumentation_info,
        record_exception: bool,
        set_status_on_exception: bool,
        limits,
        instrumentation_scope,
        record_end_metrics,
    ) -> None:
        # What ReadableSpan.__init__ and Span.__init__ assign, in one place.
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = instrumentation_info
        self._instrumentation_scope = instrumentation_scope
        self._parent = parent
        self._start_time = None
        self._end_time = None
        self._resource = resource
        self._status = _UNSET
        self._sampler = sampler
        self._trace_config = None
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._span_processor = span_processor
        self._limits = limits
        self._lock = threading.Lock()
        self._attributes = BoundedAttributes(
            limits.max_span_attributes,
            attributes,
            immutable=False,
            max_value_len=limits.max_span_attribute_length,
        )
        # An empty tuple until the first event or link: reads (events, links, dropped_*) treat it as the
        # SDK treats an empty BoundedList.
        self._events = _NO_ITEMS
        self._links = self._new_links(links) if links else _NO_ITEMS
        self._record_end_metrics = record_end_metrics

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        limits = self._limits
        count_limit, length_limit = limits.max_event_attributes, limits.max_attribute_length
        if (
            type(attributes) is dict
            and attributes
            and (count_limit is None or len(attributes) <= count_limit)
            and _all_plain(attributes, length_limit)
        ):
            # What the SDK's BoundedAttributes would hold: every key valid, every value left unchanged by
            # its cleaning, nothing over the limit — so the dict is taken as it is, without the cleaning.
            bounded = BoundedAttributes(count_limit, None, immutable=True, max_value_len=length_limit)
            bounded._dict.update(attributes)
            self._add_event(Event(name=name, attributes=bounded, timestamp=timestamp))
            return
        super().add_event(name, attributes, timestamp)

    @_check_span_ended
    def _add_event(self, event) -> None:
        if self._events is _NO_ITEMS:
            self._events = BoundedList(self._limits.max_events)
        self._events.append(event)

    @_check_span_ended
    def _add_link(self, link: trace_api.Link) -> None:
        if self._links is _NO_ITEMS:
            self._links = BoundedList(self._limits.max_links)
        self._links.append(link)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        attributes = self._attributes
        kind = type(value)
        if (
            kind in _PLAIN_VALUES
            and type(key) is str
            and key
            and attributes.maxlen != 0
            and (kind is not str or attributes.max_value_len is None)
        ):
            with self._lock:
                if self._end_time is not None:
                    logger.warning("Setting attribute on ended span.")
                    return
                attributes._raise_if_immutable()
                with attributes._lock:
                    attributes._setitem_locked(key, value)
            return
        super().set_attribute(key, value)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                logger.warning("Calling end() on an ended span.")
                return
            # The SDK module's clock, looked up as the SDK's own end() does.
            self._end_time = end_time if end_time is not None else sdk_trace.time_ns()
            self._attributes._immutable = True
        if self._record_end_metrics:
            self._record_end_metrics()
        self._span_processor._on_ending(self)
        # The span itself, not a ReadableSpan copy: the SDK's copy shares these same attribute, event
        # and link containers, and every mutator of an ended span is refused (set_attribute, add_event,
        # set_status, update_name and the rest check _end_time under the lock).
        self._span_processor.on_end(self)


def _all_plain(attributes: dict, length_limit: int | None) -> bool:
    """Whether the SDK's attribute cleaning would keep every key and leave every value unchanged."""
    for key, value in attributes.items():
        kind = type(value)
        if type(key) is not str or not key or kind not in _PLAIN_VALUES:
            return False
        if kind is str and length_limit is not None:
            return False
    return True


class LeanTracer(Tracer):
    """The SDK's tracer with a faster start_span (LeanTracerProvider makes these; see the module doc)."""

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: trace_api.SpanKind = trace_api.SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        links = links or ()
        parent_span_context = trace_api.get_current_span(context).get_span_context()
        if parent_span_context is not None and not isinstance(parent_span_context, trace_api.SpanContext):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if not self._is_enabled():
            return trace_api.NonRecordingSpan(context=parent_span_context)

        if parent_span_context is None or not parent_span_context.is_valid:
            parent_span_context = None
            trace_id = self.id_generator.generate_trace_id()
        else:
            trace_id = parent_span_context.trace_id

        sampler = self.sampler
        if sampler is DEFAULT_ON:
            # ParentBased(ALWAYS_ON) with its default delegates, decided as it decides: a root or a sampled
            # parent (remote or local) → record and sample, with the parent's trace state; an unsampled
            # parent → drop. ALWAYS_ON passes the span's attributes through; ALWAYS_OFF drops them.
            if parent_span_context is None:
                decision, trace_state = Decision.RECORD_AND_SAMPLE, None
            elif parent_span_context.trace_flags.sampled:
                decision, trace_state = Decision.RECORD_AND_SAMPLE, parent_span_context.trace_state
            else:
                decision, trace_state, attributes = Decision.DROP, parent_span_context.trace_state, None
            sampled_attributes = attributes
        else:
            result: SamplingResult = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            decision, trace_state, sampled_attributes = result.decision, result.trace_state, result.attributes

        if parent_span_context is None:
            random_trace_id = self.id_generator.is_trace_id_random()
        else:
            random_trace_id = parent_span_context.trace_flags.random_trace_id
        span_context = trace_api.SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[decision.is_sampled(), bool(random_trace_id)],
            trace_state=trace_state,
        )
        record_end_metrics = self._tracer_metrics.start_span(parent_span_context, decision)
        if not decision.is_recording():
            return trace_api.NonRecordingSpan(context=span_context)
        span = LeanSpan(
            name,
            span_context,
            parent_span_context,
            self.sampler,
            self.resource,
            sampled_attributes,
            self.span_processor,
            kind,
            links,
            self.instrumentation_info,
            record_exception,
            set_status_on_exception,
            self._span_limits,
            self._instrumentation_scope,
            record_end_metrics,
        )
        span.start(start_time=start_time, parent_context=context)
        return span


class LeanSpanProcessor(SynchronousMultiSpanProcessor):
    """The SDK's sequential multi-processor, calling each hook only on the processors that implement it
    (the base class's on_start, _on_ending and on_end do nothing). Same order, same calls otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self._starting: tuple[SpanProcessor, ...] = ()
        self._ending: tuple[SpanProcessor, ...] = ()
        self._ended: tuple[SpanProcessor, ...] = ()

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        with self._lock:
            self._span_processors += (span_processor,)
            processors = self._span_processors
            self._starting = _implementing(processors, "on_start")
            self._ending = _implementing(processors, "_on_ending")
            self._ended = _implementing(processors, "on_end")

    def on_start(self, span, parent_context: context_api.Context | None = None) -> None:
        for processor in self._starting:
            processor.on_start(span, parent_context=parent_context)

    def _on_ending(self, span) -> None:
        for processor in self._ending:
            processor._on_ending(span)

    def on_end(self, span) -> None:
        for processor in self._ended:
            processor.on_end(span)


# Hooks that do nothing: the base class's, and the batch and simple processors' on_start/_on_ending.
_NO_OP_HOOKS = frozenset(
    {
        SpanProcessor.on_start,
        SpanProcessor._on_ending,
        SpanProcessor.on_end,
        BatchSpanProcessor.on_start,
        BatchSpanProcessor._on_ending,
        SimpleSpanProcessor.on_start,
        SimpleSpanProcessor._on_ending,
    }
)


def _implementing(processors: tuple[SpanProcessor, ...], hook: str) -> tuple[SpanProcessor, ...]:
    """The processors, in order, whose `hook` (as their class defines it) is not one of the no-ops."""
    return tuple(processor for processor in processors if getattr(type(processor), hook) not in _NO_OP_HOOKS)


class LeanTracerProvider(TracerProvider):
    """The SDK's TracerProvider whose tracers are LeanTracers and whose processors run through
    LeanSpanProcessor. Constructed and configured exactly like the SDK's (same arguments, OTEL_* env)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("active_span_processor", LeanSpanProcessor())
        super().__init__(*args, **kwargs)

    def get_tracer(self, *args, **kwargs) -> trace_api.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if type(tracer) is Tracer:
            # The SDK builds `Tracer(...)` inside get_tracer and caches it per scope. LeanTracer adds
            # methods, no state, so the cached object becomes one in place (once per scope).
            tracer.__class__ = LeanTracer
        return tracer
