"""One rule for trace ids, whoever reads them: the trace store's API and the command line (test_cli.py
has the forms people paste: traceparent and traceresponse values, header lines, quotes)."""

from __future__ import annotations

import pytest

from tracehop.traces.trace_id import InvalidTraceId, normalise_trace_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4BF92F3577B34DA6A3CE929D0E0E4736", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("  4bf92f3577b34da6a3ce929d0e0e4736\n", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("a3ce929d0e0e4736", "0000000000000000a3ce929d0e0e4736"),  # a 64-bit id, padded as Jaeger does
    ],
)
def test_a_trace_id_becomes_32_lowercase_hex_digits(text, expected):
    assert normalise_trace_id(text) == expected


@pytest.mark.parametrize(
    "text", ["", "not-a-trace-id", "12345", "4bf92f3577b34da6a3ce929d0e0e47360", "4bf9 2f35", "0" * 16]
)
def test_anything_else_is_refused_with_what_a_trace_id_looks_like(text):
    with pytest.raises(InvalidTraceId, match="is not a trace id|all-zero"):
        normalise_trace_id(text)
