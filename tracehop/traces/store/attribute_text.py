"""An OTLP attribute value as the text Jaeger compares a `query.attributes` value with.

Jaeger's memory store matches `key=value` when the attribute's `pcommon.Value.AsString()` equals the value
(internal/storage/v2/memory/tenant.go matchAttributes). AsString (go.opentelemetry.io/collector/pdata) is:
strings as they are; booleans `true`/`false`; integers in decimal; doubles as JavaScript prints numbers
(`200`, `0.25`, `1e+21`); bytes in standard base64; arrays and maps as Go's encoding/json writes them
(compact, keys sorted, `<`, `>` and `&` escaped). An empty value is "".
"""

from __future__ import annotations

import base64
import json
import math
from decimal import Decimal
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue


def as_string(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind in ("array_value", "kvlist_value"):
        return go_json(_raw(value))
    if kind is None:
        return ""
    return _scalar_text(_raw(value))


def _raw(value: AnyValue) -> Any:
    """The value as plain Python data (pcommon's AsRaw)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_raw(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {item.key: _raw(item.value) for item in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value
    return getattr(value, kind) if kind else None


def _scalar_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float):
        return go_float(raw)
    if isinstance(raw, bytes):
        return base64.b64encode(raw).decode("ascii")
    return str(raw)


def go_float(number: float) -> str:
    """A float64 as Go's encoding/json (and pcommon's float64AsString) writes it: ES6 number-to-string."""
    if math.isnan(number) or math.isinf(number):
        return (
            f"json: unsupported value: {'NaN' if math.isnan(number) else ('+Inf' if number > 0 else '-Inf')}"
        )
    magnitude = abs(number)
    shortest = repr(number)  # the shortest text that reads back as the same float, like Go's precision -1
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        # repr writes these magnitudes with an exponent too ("1.5e-07"); Go writes "1.5e-7".
        mantissa, _, exponent = shortest.partition("e")
        return f"{mantissa}e{exponent[0]}{int(exponent[1:])}"
    text = format(Decimal(shortest), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def go_json(raw: Any) -> str:
    """encoding/json.Marshal of plain data: compact, map keys sorted, HTML characters escaped."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        return go_float(raw)
    if isinstance(raw, bytes):
        return _go_string(base64.b64encode(raw).decode("ascii"))
    if isinstance(raw, str):
        return _go_string(raw)
    if isinstance(raw, list):
        return "[" + ",".join(go_json(item) for item in raw) + "]"
    return "{" + ",".join(f"{_go_string(key)}:{go_json(raw[key])}" for key in sorted(raw)) + "}"


def _go_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        encoded = encoded.replace(char, escape)
    return encoded.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
