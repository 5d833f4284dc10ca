"""The tree text form: building, rendering, parsing, the tree assertion and the waterfall built on it."""

from __future__ import annotations

import random

import pytest
from rich.console import Console

from tracehop.traces.query import Span
from tracehop.traces.tree import (
    ExpectedNode,
    Node,
    assert_trace_tree,
    build_tree,
    parse_text,
    render_text,
)
from tracehop.traces.waterfall import render_trace_list, render_waterfall

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
MS = 1_000_000

# The contract's example, verbatim: render_text must reproduce it byte for byte.
CONTRACT_TREE = """\
gateway   SERVER    POST /api/users
├─ gateway  CLIENT    POST
│  └─ users   SERVER    POST /users
│     ├─ users  INTERNAL  auth_check
│     ├─ users  CLIENT    INCR
│     ├─ users  CLIENT    HSET
│     └─ users  INTERNAL  serialize
└─ gateway  PRODUCER  apply_async/send_welcome_email
   └─ worker  CONSUMER  run/send_welcome_email"""


def make_span(
    span_id: int,
    parent_id: int | None,
    service: str,
    kind: str,
    name: str,
    start_ms: float = 0,
    duration_ms: float = 1,
    trace_id: str = TRACE_ID,
    status_code: str = "UNSET",
    status_message: str = "",
) -> Span:
    start_ns = int(start_ms * MS)
    return Span(
        trace_id=trace_id,
        span_id=f"{span_id:016x}",
        parent_span_id="" if parent_id is None else f"{parent_id:016x}",
        name=name,
        kind=kind,
        service=service,
        start_ns=start_ns,
        end_ns=start_ns + int(duration_ms * MS),
        status_code=status_code,
        status_message=status_message,
    )


def contract_spans() -> list[Span]:
    """The spans of one POST /api/users, start times in the order the contract lists them."""
    return [
        make_span(1, None, "gateway", "SERVER", "POST /api/users", 0, 50),
        make_span(2, 1, "gateway", "CLIENT", "POST", 1, 30),
        make_span(3, 2, "users", "SERVER", "POST /users", 2, 27),
        make_span(4, 3, "users", "INTERNAL", "auth_check", 3, 1),
        make_span(5, 3, "users", "CLIENT", "INCR", 5, 1),
        make_span(6, 3, "users", "CLIENT", "HSET", 7, 1),
        make_span(7, 3, "users", "INTERNAL", "serialize", 9, 1),
        make_span(8, 1, "gateway", "PRODUCER", "apply_async/send_welcome_email", 35, 5),
        make_span(9, 8, "worker", "CONSUMER", "run/send_welcome_email", 60, 20),
    ]


def shape(nodes: list[Node] | list[ExpectedNode]) -> list[tuple]:
    """Nested (service, kind, name, children) tuples of either tree type, for comparisons."""
    result = []
    for node in nodes:
        label = node.span if isinstance(node, Node) else node
        result.append((label.service, label.kind, label.name, shape(node.children)))
    return result


# ---------------------------------------------------------------------------------------------- building


def test_render_text_reproduces_the_contract_example_exactly() -> None:
    spans = contract_spans()
    random.Random(7).shuffle(spans)

    assert render_text(build_tree(spans)) == CONTRACT_TREE


def test_children_are_sorted_by_start_time() -> None:
    spans = [
        make_span(1, None, "gateway", "SERVER", "root", 0, 10),
        make_span(2, 1, "gateway", "INTERNAL", "late", 8),
        make_span(3, 1, "gateway", "INTERNAL", "early", 2),
    ]

    (root,) = build_tree(spans)

    assert [child.span.name for child in root.children] == ["early", "late"]


def test_span_with_missing_parent_is_an_extra_root_marked_orphan() -> None:
    spans = [
        make_span(1, None, "gateway", "SERVER", "POST /api/users", 0, 10),
        make_span(2, 0xDEAD, "worker", "CONSUMER", "run/send_welcome_email", 5),
    ]

    roots = build_tree(spans)

    assert [(root.span.name, root.orphan) for root in roots] == [
        ("POST /api/users", False),
        ("run/send_welcome_email", True),
    ]
    assert f"orphan: parent {0xDEAD:016x} is not in the trace" in render_text(roots)


def test_parent_cycle_keeps_every_span_visible() -> None:
    spans = [make_span(1, 2, "users", "INTERNAL", "a", 0), make_span(2, 1, "users", "INTERNAL", "b", 1)]

    roots = build_tree(spans)

    assert sorted(node.span.name for root in roots for _, node in root.walk()) == ["a", "b"]
    assert all(root.orphan for root in roots)


def test_mark_errors_appends_the_error_column() -> None:
    spans = [
        make_span(1, None, "gateway", "SERVER", "GET /api/users/<id>", 0, 10),
        make_span(2, 1, "users", "SERVER", "GET /users/<id>", 1, status_code="ERROR"),
    ]

    text = render_text(build_tree(spans), mark_errors=True)

    assert text.splitlines()[1].endswith("GET /users/<id>  ✗")
    assert "✗" not in render_text(build_tree(spans))


# ----------------------------------------------------------------------------------------------- parsing


def test_parse_text_round_trips_render_text() -> None:
    roots = build_tree(contract_spans())

    assert shape(parse_text(render_text(roots, mark_errors=True))) == shape(roots)


def test_parse_text_tolerates_indentation_blank_lines_and_waterfall_columns() -> None:
    pasted = """
        gateway   SERVER    POST /api/users              │    50.00 ms ██████████

        ├─ gateway  CLIENT    POST                       │    30.00 ms  ██████  ✗ timeout
        │  └─ users   SERVER    POST /users | 27.00 ms
        └─ gateway  PRODUCER  apply_async/send_welcome_email  ✗
    """

    assert shape(parse_text(pasted)) == [
        (
            "gateway",
            "SERVER",
            "POST /api/users",
            [
                ("gateway", "CLIENT", "POST", [("users", "SERVER", "POST /users", [])]),
                ("gateway", "PRODUCER", "apply_async/send_welcome_email", []),
            ],
        )
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("gateway  SERVR  GET /", "line 1 'gateway  SERVR  GET /': unknown kind 'SERVR'"),
        ("gateway SERVER GET /", "line 1 'gateway SERVER GET /': expected `service  KIND  name`"),
        ("gateway  SERVER  GET /\n│  └─ users  SERVER  GET /", "line 2"),
        ("gateway  SERVER  GET /\n│  users  SERVER  GET /", "line 2 '│  users  SERVER  GET /': tree prefix"),
        ("…", "line 1 '…': `…` must be a child line"),
        (
            "a  SERVER  x\n├─ …\n│  └─ b  CLIENT  y",
            "line 3 '│  └─ b  CLIENT  y': a `…` line cannot have children",
        ),
        ("\n   \n", "the expected tree is empty"),
    ],
)
def test_parse_text_names_the_malformed_line(text: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_text(text)

    assert problem in str(raised.value)


# ---------------------------------------------------------------------------------------------- assertion


def test_assert_trace_tree_ignores_sibling_order() -> None:
    shuffled = """
        gateway   SERVER    POST /api/users
        ├─ gateway  PRODUCER  apply_async/send_welcome_email
        │  └─ worker  CONSUMER  run/send_welcome_email
        └─ gateway  CLIENT    POST
           └─ users   SERVER    POST /users
              ├─ users  INTERNAL  serialize
              ├─ users  CLIENT    HSET
              ├─ users  CLIENT    INCR
              └─ users  INTERNAL  auth_check
    """

    roots = assert_trace_tree(contract_spans(), shuffled)

    # The returned tree follows the expected order, so a test can index it like its text.
    assert roots[0].children[0].span.name == "apply_async/send_welcome_email"
    assert roots[0].children[1].children[0].children[0].span.name == "serialize"


def _replace_line(old: str, new: str) -> str:
    assert old in CONTRACT_TREE
    return CONTRACT_TREE.replace(old, new)


@pytest.mark.parametrize(
    "expected",
    [
        pytest.param(_replace_line("worker  CONSUMER", "users  CONSUMER"), id="wrong service"),
        pytest.param(_replace_line("users  CLIENT    INCR", "users  INTERNAL  INCR"), id="wrong kind"),
        pytest.param(_replace_line("HSET", "HGET"), id="wrong name"),
        # Each expected line needs its own span: two INCR lines cannot both match the one INCR span.
        pytest.param(_replace_line("HSET", "INCR"), id="one span for two lines"),
        pytest.param(_replace_line("│     ├─ users  CLIENT    HSET\n", ""), id="extra actual span"),
        pytest.param(CONTRACT_TREE + "\n      └─ worker  CLIENT  GET /users/<id>", id="missing actual span"),
    ],
)
def test_assert_trace_tree_fails_on_any_difference(expected: str) -> None:
    with pytest.raises(AssertionError, match="does not match"):
        assert_trace_tree(contract_spans(), expected)


def test_assert_trace_tree_fails_when_a_span_hangs_under_the_wrong_parent() -> None:
    spans = contract_spans()
    # serialize (7) recorded as a child of the gateway's CLIENT span instead of users' SERVER span.
    spans[6] = make_span(7, 2, "users", "INTERNAL", "serialize", 9, 1)

    with pytest.raises(AssertionError, match="does not match"):
        assert_trace_tree(spans, CONTRACT_TREE)


def test_an_orphan_fails_a_single_root_expectation_and_is_shown() -> None:
    spans = contract_spans()
    spans[8] = make_span(9, 0xBAD, "worker", "CONSUMER", "run/send_welcome_email", 60, 20)

    with pytest.raises(AssertionError) as raised:
        assert_trace_tree(spans, CONTRACT_TREE)

    assert f"(orphan: parent {0xBAD:016x} is not in the trace)" in str(raised.value)


def test_spans_of_several_traces_are_rejected() -> None:
    other = "0af7651916cd43dd8448eb211c80319c"
    spans = [
        make_span(1, None, "gateway", "SERVER", "a"),
        make_span(2, 1, "gateway", "CLIENT", "b", trace_id=other),
    ]

    with pytest.raises(AssertionError, match=f"2 traces, expected one: {other}, {TRACE_ID}"):
        assert_trace_tree(spans, "gateway  SERVER  a\n└─ gateway  CLIENT  b")


def test_no_spans_is_a_failure_not_a_pass() -> None:
    with pytest.raises(AssertionError, match="no spans"):
        assert_trace_tree([], CONTRACT_TREE)


def test_failure_message_shows_both_trees_side_by_side_with_differing_lines_marked() -> None:
    expected = _replace_line("HSET", "HGET")

    with pytest.raises(AssertionError) as raised:
        assert_trace_tree(contract_spans(), expected)

    lines = str(raised.value).splitlines()
    assert TRACE_ID in lines[0]
    assert lines[1].split() == ["expected", "│", "actual"]
    rows = lines[2:11]
    differing = [row for row in rows if row.startswith("≠")]
    assert len(differing) == 1
    left, right = differing[0][2:].split("  │ ")
    assert left.strip() == "│     ├─ users  CLIENT    HGET"
    assert right == "│     ├─ users  CLIENT    HSET"
    assert rows[0].startswith("  gateway   SERVER    POST /api/users") and rows[0].endswith(
        "│ gateway   SERVER    POST /api/users"
    )


def test_failure_message_pairs_a_missing_span_with_an_empty_side() -> None:
    spans = [s for s in contract_spans() if s.name != "run/send_welcome_email"]

    with pytest.raises(AssertionError) as raised:
        assert_trace_tree(spans, CONTRACT_TREE)

    (row,) = [line for line in str(raised.value).splitlines() if line.startswith("≠")]
    assert "└─ worker  CONSUMER  run/send_welcome_email" in row
    assert row.endswith("│")  # nothing on the actual side


def test_wildcard_name_matches_any_name_but_not_another_service_or_kind() -> None:
    spans = [
        make_span(1, None, "users", "SERVER", "POST /users"),
        make_span(2, 1, "users", "CLIENT", "INCR", 1),
    ]

    assert_trace_tree(spans, "users  SERVER  POST /users\n└─ users  CLIENT  *")
    with pytest.raises(AssertionError):
        assert_trace_tree(spans, "users  SERVER  POST /users\n└─ users  INTERNAL  *")
    with pytest.raises(AssertionError):
        assert_trace_tree(spans, "users  SERVER  POST /users\n└─ gateway  CLIENT  *")


def test_wildcard_does_not_take_the_span_an_exact_line_needs() -> None:
    spans = [
        make_span(1, None, "users", "SERVER", "POST /users"),
        make_span(2, 1, "users", "CLIENT", "INCR", 1),
        make_span(3, 1, "users", "CLIENT", "HSET", 2),
    ]

    # A greedy match would give INCR to `*` (first line) and then find no INCR for the second line.
    assert_trace_tree(spans, "users  SERVER  POST /users\n├─ users  CLIENT  *\n└─ users  CLIENT  INCR")


def test_ellipsis_allows_further_children_but_still_requires_the_listed_ones() -> None:
    spans = contract_spans()
    with_ellipsis = """
        gateway   SERVER    POST /api/users
        ├─ gateway  CLIENT    POST
        │  └─ users   SERVER    POST /users
        │     ├─ users  INTERNAL  auth_check
        │     └─ …
        └─ gateway  PRODUCER  apply_async/send_welcome_email
           └─ worker  CONSUMER  run/send_welcome_email
    """
    without_ellipsis = with_ellipsis.replace(
        "│     ├─ users  INTERNAL  auth_check\n        │     └─ …", "│     └─ users  INTERNAL  auth_check"
    )

    assert_trace_tree(spans, with_ellipsis)
    with pytest.raises(AssertionError):
        assert_trace_tree(spans, without_ellipsis)
    with pytest.raises(AssertionError):
        assert_trace_tree(spans, with_ellipsis.replace("auth_check", "rate_limit"))


# ---------------------------------------------------------------------------------------------- waterfall


def _waterfall(spans: list[Span], width: int) -> list[str]:
    # A terminal of that width (tests/unit/test_narrow_output.py covers pipes and 80 columns).
    console = Console(record=True, width=width, color_system=None, force_terminal=True)
    render_waterfall(spans, console)
    return console.export_text().splitlines()


def test_waterfall_lines_start_with_the_text_form() -> None:
    lines = _waterfall(contract_spans(), width=140)

    assert TRACE_ID in lines[0]
    tree_columns = [line.split("  │ ")[0].rstrip() for line in lines[1:]]
    assert "\n".join(tree_columns) == CONTRACT_TREE
    assert shape(parse_text("\n".join(lines[1:]))) == shape(build_tree(contract_spans()))


def test_waterfall_places_bars_on_the_time_axis_and_marks_errors() -> None:
    spans = [
        make_span(1, None, "gateway", "SERVER", "POST /api/users", 0, 100),
        make_span(2, 1, "users", "SERVER", "POST /users", 10, 20),
        make_span(
            3,
            1,
            "worker",
            "CONSUMER",
            "run/send_welcome_email",
            60,
            40,
            status_code="ERROR",
            status_message="SMTP 451 greylisted",
        ),
    ]

    lines = _waterfall(spans, width=120)

    bars = [line.split("  │ ")[1] for line in lines[1:]]
    starts = [bar.index("█") for bar in bars]
    assert starts[0] < starts[1] < starts[2]
    assert bars[0].count("█") > bars[2].count("█") > bars[1].count("█")
    assert lines[3].endswith("✗ SMTP 451 greylisted")
    assert "✗" not in lines[1] + lines[2]
    assert "1 error" in lines[0]


def test_waterfall_never_wraps_a_span_line_on_a_narrow_console() -> None:
    lines = _waterfall(contract_spans(), width=60)

    assert all(len(line) <= 60 for line in lines)
    span_lines = [line for line in lines if "  │ " in line]
    assert len(span_lines) == len(contract_spans())
    assert shape(parse_text("\n".join(span_lines))) == shape(build_tree(contract_spans()))


def test_trace_list_shows_root_span_count_duration_and_errors() -> None:
    spans = contract_spans()
    failing = [
        make_span(
            1, None, "gateway", "SERVER", "GET /api/users/<id>", 0, 5, trace_id="ab" * 16, status_code="ERROR"
        )
    ]
    console = Console(record=True, width=200, color_system=None)

    console.print(render_trace_list({TRACE_ID: spans, "ab" * 16: failing}))

    rows = [line for line in console.export_text().splitlines() if TRACE_ID in line or "ab" * 16 in line]
    cells = [[cell.strip() for cell in row.split("│")[1:-1]] for row in rows]
    assert cells == [
        [TRACE_ID, "gateway SERVER POST /api/users", "9", "80.00 ms", "gateway, users, worker", "0"],
        ["ab" * 16, "gateway SERVER GET /api/users/<id>", "1", "5.00 ms", "gateway", "1"],
    ]
