"""Which propagators a service uses: whatever OTEL_PROPAGATORS says, with our W3C `tracestate` parsing.

`use_w3c_tracestate()` swaps the library's `TraceContextTextMapPropagator` for `W3CTraceContextPropagator`
(services/telemetry/tracestate.py) wherever it appears in the global propagator and leaves every other
propagator (baggage, B3, ...) as configured. Every service calls it, not only the gateway: a member the
gateway kept must not make the next service's parser drop the whole header again.
"""

from __future__ import annotations

from opentelemetry import propagate
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.telemetry.tracestate import W3CTraceContextPropagator


def use_w3c_tracestate() -> None:
    """Install our tracestate parsing into the global propagator. Idempotent."""
    current = propagate.get_global_textmap()
    replaced = _replace(current)
    if replaced is not current:
        propagate.set_global_textmap(replaced)


def _replace(propagator: TextMapPropagator) -> TextMapPropagator:
    if type(propagator) is TraceContextTextMapPropagator:  # exactly the library's: ours is a subclass
        return W3CTraceContextPropagator()
    if isinstance(propagator, CompositePropagator):
        # CompositePropagator offers no public accessor for its members; without the attribute (a future
        # SDK) the propagator stays as it is, which is the library's behaviour, not a failure.
        members = getattr(propagator, "_propagators", None)
        if members is None:
            return propagator
        replaced = [_replace(member) for member in members]
        if any(new is not old for new, old in zip(replaced, members, strict=True)):
            return CompositePropagator(replaced)
    return propagator
