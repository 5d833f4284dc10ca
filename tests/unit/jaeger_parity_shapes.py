"""Body shapes of the parity table (jaeger_parity.py): each a check that raises AssertionError with the
difference. They receive the parsed JSON of an `application/json` answer, the text of any other."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tests.unit.jaeger_parity_spans import TRACE_IDS


def error(status: int, message: str, exact: bool = False) -> Callable[[str], None]:
    """http.Error's body: the JSON of GRPCGatewayError (encoding/json, so a trailing newline) as text."""

    def check(text: str) -> None:
        assert text.endswith("\n"), f"http.Error ends its body with a newline: {text!r}"
        document = json.loads(text)
        assert set(document) == {"error"} and set(document["error"]) == {"httpCode", "message"}, document
        assert document["error"]["httpCode"] == status, document
        got = document["error"]["message"]
        assert (got == message) if exact else got.startswith(message), f"message {got!r}, want {message!r}"

    return check


def plain(expected: str) -> Callable[[str], None]:
    def check(text: str) -> None:
        assert text == expected, f"{text!r} != {expected!r}"

    return check


def exactly(expected: Any) -> Callable[[Any], None]:
    def check(document: Any) -> None:
        assert document == expected, f"{document!r} != {expected!r}"

    return check


def traces(
    *labels: str, resources: Sequence[tuple[str, str, Sequence[str]]] | None = None
) -> Callable[[Any], None]:
    """`result.resourceSpans` holding the traces `labels` in this order (each trace's entries together).

    `resources`: every resourceSpans entry in order, as (trace label, service.name or "", scope names).
    Every span carries `status` (an empty one as `{}`), every entry `resource`, every scope `scope`.
    """

    def check(document: Any) -> None:
        assert set(document) == {"result"} and set(document["result"]) == {"resourceSpans"}, document
        entries = document["result"]["resourceSpans"]
        order: list[str] = []
        seen = []
        for entry in entries:
            assert "resource" in entry and entry["scopeSpans"], entry
            service = next(
                (
                    a["value"]["stringValue"]
                    for a in entry["resource"].get("attributes", [])
                    if a["key"] == "service.name"
                ),
                "",
            )
            ids = {span["traceId"] for scope in entry["scopeSpans"] for span in scope["spans"]}
            assert len(ids) == 1, f"one resourceSpans entry holds one trace, got {ids}"
            label = (
                next(k for k, v in TRACE_IDS.items() if v in ids) if ids <= set(TRACE_IDS.values()) else "?"
            )
            if not order or order[-1] != label:
                assert label not in order, f"trace {label}'s entries are not together: {order} + {label}"
                order.append(label)
            for scope in entry["scopeSpans"]:
                assert "scope" in scope, scope
                for span in scope["spans"]:
                    assert "status" in span, f"span {span['name']} has no status: Jaeger writes {{}}"
            seen.append((label, service, [scope["scope"].get("name", "") for scope in entry["scopeSpans"]]))
        assert order == list(labels), f"traces {order}, want {list(labels)}"
        if resources is not None:
            want = [(label, service, list(scopes)) for label, service, scopes in resources]
            assert seen == want, f"resourceSpans {seen}, want {want}"

    return check


def trace_count(count: int) -> Callable[[Any], None]:
    def check(document: Any) -> None:
        ids = {
            span["traceId"]
            for entry in document["result"]["resourceSpans"]
            for scope in entry["scopeSpans"]
            for span in scope["spans"]
        }
        assert len(ids) == count, f"{len(ids)} traces, want {count}"

    return check


def services(*names: str) -> Callable[[Any], None]:
    def check(document: Any) -> None:
        # Jaeger's order is a Go map's (memory/memory.go GetServices): compare as sets.
        assert set(document) == {"services"} and sorted(document["services"]) == sorted(names), document

    return check


def operations(*pairs: tuple[str, str]) -> Callable[[Any], None]:
    def check(document: Any) -> None:
        assert set(document) == {"operations"}, document
        got = sorted((op["name"], op["spanKind"]) for op in document["operations"])
        assert got == sorted(pairs), f"{got} != {sorted(pairs)}"

    return check


def summaries(*expected: Mapping[str, Any]) -> Callable[[Any], None]:
    """`{"summaries": [...]}`, proto3 JSON: zero fields omitted, the fixed64 times as decimal strings."""

    def check(document: Any) -> None:
        assert set(document) == {"summaries"}, document
        assert document["summaries"] == list(expected), f"{document['summaries']} != {list(expected)}"

    return check
