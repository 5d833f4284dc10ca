"""The one tree representation of a trace: build it from spans, print it, parse it, assert on it.

The text form is the one STYLE.md shows; `make trace` prints it and tests assert it, so a tree seen in a
terminal can be pasted into a test as the expectation:

    gateway   SERVER    POST /api/users
    ├─ gateway  CLIENT    POST
    │  └─ users   SERVER    POST /users
    └─ gateway  PRODUCER  apply_async/send_welcome_email
       └─ worker  CONSUMER  run/send_welcome_email

Each line is a tree prefix (`├─ `, `└─ `, `│  `, `   `), then service, kind and span name separated by two or
more spaces (a name may contain single spaces). Further columns (an error mark, `│ 12.3 ms ...` from the
waterfall) are ignored by the parser.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from tracehop.traces.query import Span

KINDS = ("SERVER", "CLIENT", "PRODUCER", "CONSUMER", "INTERNAL")
KIND_WIDTH = max(len(kind) for kind in KINDS) + 2
ERROR_MARK = "✗"
DIFF_MARK = "≠"
WILDCARD_NAME = "*"
ELLIPSIS_LINES = ("…", "...")

BRANCH, LAST_BRANCH, PIPE, BLANK = "├─ ", "└─ ", "│  ", "   "

_COLUMN_GAP = re.compile(r"\s{2,}")
# Everything from a standalone `│` or `|` on is a waterfall column, even if only one space precedes it.
_EXTRA_COLUMNS = re.compile(r"\s[│|](\s.*)?$")


@dataclass
class Node:
    """A span in the tree. `orphan` marks a span whose parent is not in the trace (a broken trace)."""

    span: Span
    children: list[Node] = field(default_factory=list)
    orphan: bool = False

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Node]]:
        """Depth-first, parents before children: (depth, node)."""
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)


@dataclass
class ExpectedNode:
    """One line of an expected tree; `name == "*"` matches any span name."""

    service: str
    kind: str
    name: str
    children: list[ExpectedNode] = field(default_factory=list)
    more_children: bool = False  # a `…` child line: actual children beyond the listed ones are allowed
    line_number: int = 0


@dataclass(frozen=True)
class TreeLine:
    """One rendered line: `text` is the prefix plus the service, kind and name columns."""

    depth: int
    prefix: str
    text: str
    node: Node


# ----------------------------------------------------------------------------------------------- building


def build_tree(spans: Iterable[Span]) -> list[Node]:
    """Link spans by parent id; return the roots, everything sorted by start time.

    A span whose parent is not among `spans` becomes an extra root marked `orphan`: a lost span or a broken
    propagation then shows as a second tree instead of silently disappearing. Parent cycles (only possible
    with corrupt data) are cut the same way, so every span appears exactly once.
    """
    nodes: dict[str, Node] = {}
    for span in sorted(spans, key=_start_order):
        nodes.setdefault(span.span_id, Node(span))
    roots: list[Node] = []
    for node in nodes.values():
        parent = nodes.get(node.span.parent_span_id)
        if parent is None or parent is node:
            node.orphan = bool(node.span.parent_span_id)
            roots.append(node)
        else:
            parent.children.append(node)
    _cut_cycles(nodes, roots)
    return roots


def _start_order(span: Span) -> tuple[int, str, str]:
    return (span.start_ns, span.name, span.span_id)


def _cut_cycles(nodes: dict[str, Node], roots: list[Node]) -> None:
    reachable = {id(node) for root in roots for _, node in root.walk()}
    for node in nodes.values():
        if id(node) in reachable:
            continue
        nodes[node.span.parent_span_id].children.remove(node)
        node.orphan = True
        roots.append(node)
        reachable.update(id(member) for _, member in node.walk())
    roots.sort(key=lambda root: _start_order(root.span))


# ---------------------------------------------------------------------------------------------- rendering

T = TypeVar("T")


@dataclass(frozen=True)
class _Prefixed(Generic[T]):
    depth: int
    prefix: str
    item: T


def _with_prefixes(roots: Sequence[T], children_of: Callable[[T], Sequence[T]]) -> Iterator[_Prefixed[T]]:
    """Depth-first walk yielding each item with its box-drawing prefix."""

    def walk(item: T, depth: int, indent: str) -> Iterator[_Prefixed[T]]:
        kids = children_of(item)
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            yield _Prefixed(depth + 1, indent + (LAST_BRANCH if last else BRANCH), kid)
            yield from walk(kid, depth + 1, indent + (BLANK if last else PIPE))

    for root in roots:
        yield _Prefixed(0, "", root)
        yield from walk(root, 0, "")


def format_columns(prefix: str, depth: int, service: str, kind: str, name: str, service_base: int) -> str:
    """One line of the text form.

    The service column is `service_base - depth` wide (at least the service plus two spaces) and the kind
    column KIND_WIDTH wide: this reproduces STYLE.md's example exactly, where deeper lines move right
    by two characters per level.
    """
    service_width = max(len(service) + 2, service_base - depth)
    return f"{prefix}{service:<{service_width}}{kind:<{KIND_WIDTH}}{name}"


def _service_base(services: Iterable[str]) -> int:
    return max((len(service) for service in services), default=0) + 3


def _label(span: Span) -> tuple[str, str, str]:
    # Empty columns would make the line unparseable; show a placeholder instead.
    return (span.service or "unknown_service", span.kind or "INTERNAL", span.name or "(unnamed)")


def tree_lines(roots: Sequence[Node]) -> list[TreeLine]:
    """The text form's lines with their nodes, for renderers that append columns (the waterfall)."""
    base = _service_base(_label(node.span)[0] for root in roots for _, node in root.walk())
    lines = []
    for entry in _with_prefixes(roots, lambda node: node.children):
        text = format_columns(entry.prefix, entry.depth, *_label(entry.item.span), base)
        lines.append(TreeLine(entry.depth, entry.prefix, text, entry.item))
    return lines


def annotations(node: Node, mark_errors: bool) -> str:
    """Trailing columns after the name: the error mark and an orphan warning (both ignored by the parser)."""
    notes = []
    if mark_errors and node.span.is_error:
        notes.append(ERROR_MARK)
    if node.orphan:
        notes.append(f"(orphan: parent {node.span.parent_span_id} is not in the trace)")
    return "".join(f"  {note}" for note in notes)


def render_text(roots: Sequence[Node], *, mark_errors: bool = False) -> str:
    """The text form of the tree (no trailing newline). `mark_errors` appends `  ✗` to error spans."""
    return "\n".join(line.text + annotations(line.node, mark_errors) for line in tree_lines(roots))


# ------------------------------------------------------------------------------------------------ parsing


def parse_text(text: str) -> list[ExpectedNode]:
    """Parse the text form into expected roots.

    Tolerates surrounding indentation and blank lines, so a triple-quoted string in a test works as is.
    Besides plain lines, two wildcards are understood:

    - a name column of `*` matches any span name (e.g. a Redis command you do not want to pin);
    - a child line of only `…` (or `...`) means "any further children": the listed siblings must be there,
      extra ones (with their subtrees) are allowed.

    Raises ValueError naming the line for anything else that does not fit the form.
    """
    roots: list[ExpectedNode] = []
    stack: list[ExpectedNode] = []  # stack[d] is the latest node at depth d
    ellipsis_depth: int | None = None
    for number, line in enumerate(textwrap.dedent(text).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            depth, rest = _split_prefix(line.rstrip())
            if ellipsis_depth is not None and depth > ellipsis_depth:
                raise ValueError("a `…` line cannot have children")
            if depth > len(stack):
                raise ValueError(f"depth {depth} is more than one level below the previous line")
            ellipsis_depth = None
            if rest in ELLIPSIS_LINES:
                if depth == 0:
                    raise ValueError("`…` must be a child line (it means: any further children)")
                stack[depth - 1].more_children = True
                ellipsis_depth = depth
                continue
            node = _parse_columns(rest, number)
        except ValueError as error:
            raise ValueError(f"line {number} {line.strip()!r}: {error}") from None
        del stack[depth:]
        (stack[depth - 1].children if depth else roots).append(node)
        stack.append(node)
    if not roots:
        raise ValueError("the expected tree is empty")
    return roots


def _split_prefix(line: str) -> tuple[int, str]:
    """Return (depth, rest of line) for one line of the text form."""
    position = 0
    depth = 0
    while line.startswith((PIPE, BLANK), position):
        position += len(PIPE)
        depth += 1
    if line.startswith(("├─", "└─"), position):
        return depth + 1, line[position + 2 :].lstrip("─ ")
    if depth:
        raise ValueError("tree prefix must end with `├─ ` or `└─ `")
    return 0, line


def _parse_columns(rest: str, number: int) -> ExpectedNode:
    columns = _COLUMN_GAP.split(_EXTRA_COLUMNS.sub("", rest).strip())
    if len(columns) < 3:
        raise ValueError("expected `service  KIND  name` separated by two or more spaces")
    service, kind, name = columns[0], columns[1].upper(), columns[2]
    if kind not in KINDS:
        raise ValueError(f"unknown kind {columns[1]!r} (one of {', '.join(KINDS)})")
    return ExpectedNode(service, kind, name, line_number=number)


def _expected_line(entry: _Prefixed[ExpectedNode], base: int) -> str:
    node = entry.item
    if node is _ELLIPSIS:
        return entry.prefix + "…"
    return format_columns(entry.prefix, entry.depth, node.service, node.kind, node.name, base)


# Stands for a `…` line when an expected tree is printed next to the actual one.
_ELLIPSIS = ExpectedNode("", "", "…")


# ---------------------------------------------------------------------------------------------- assertion


def assert_trace_tree(spans: Iterable[Span], expected_text: str) -> list[Node]:
    """Assert that `spans` form exactly the tree `expected_text` describes (see `parse_text`).

    Structure, service, kind and name must match; the order of siblings does not (concurrent spans
    finish in any order), so children are matched as multisets. The text has as many roots as the trace
    must have: usually one, and an orphaned span is an extra root that makes the assertion fail.

    Returns the actual roots with children in the order of the expected text, so a test can go on with
    e.g. `roots[0].children[1].span.attributes`. On mismatch the AssertionError shows both trees side by
    side with `≠` on the lines that differ.
    """
    spans = list(spans)
    if not spans:
        raise AssertionError(f"no spans to compare with the expected tree:\n{expected_text}")
    trace_ids = sorted({span.trace_id for span in spans})
    if len(trace_ids) > 1:
        raise AssertionError(f"spans belong to {len(trace_ids)} traces, expected one: {', '.join(trace_ids)}")
    expected = parse_text(expected_text)
    actual = build_tree(spans)
    matcher = _Matcher()
    pairs = matcher.pair(expected, False, actual)
    if matcher.children_match(expected, False, actual):
        return [_ordered_node(pair) for pair in pairs if pair.actual is not None]
    raise AssertionError(_mismatch_message(trace_ids[0], pairs, actual))


@dataclass
class _Pair:
    """An expected line and the actual span shown next to it; either side may be missing."""

    expected: ExpectedNode | None
    actual: Node | None
    differs: bool
    children: list[_Pair] = field(default_factory=list)


class _Matcher:
    """Multiset matching of expected and actual subtrees (bipartite matching per sibling group)."""

    def __init__(self) -> None:
        self._memo: dict[tuple[int, int], bool] = {}

    def subtree_matches(self, expected: ExpectedNode, actual: Node) -> bool:
        key = (id(expected), id(actual))
        if key not in self._memo:
            self._memo[key] = label_matches(expected, actual.span) and self.children_match(
                expected.children, expected.more_children, actual.children
            )
        return self._memo[key]

    def children_match(self, expected: Sequence[ExpectedNode], more: bool, actual: Sequence[Node]) -> bool:
        if len(expected) > len(actual) or (not more and len(expected) != len(actual)):
            return False
        return len(_max_matching(expected, actual, self.subtree_matches)) == len(expected)

    def pair(self, expected: Sequence[ExpectedNode], more: bool, actual: Sequence[Node]) -> list[_Pair]:
        """Line up expected and actual siblings for display: whole-subtree matches first, then
        same-label matches, then (unless `…` absorbs extras) what is left, position by position."""
        partner = _max_matching(expected, actual, self.subtree_matches)
        _extend_matching(partner, expected, actual, lambda e, a: label_matches(e, a.span))
        if not more:
            _extend_matching(partner, expected, actual, lambda e, a: True)
        pairs = [
            self._pair_one(node, actual[partner[i]] if i in partner else None)
            for i, node in enumerate(expected)
        ]
        if more:
            pairs.append(_Pair(_ELLIPSIS, None, differs=False))
        taken = set(partner.values())
        pairs.extend(_actual_only(node, differs=not more) for j, node in enumerate(actual) if j not in taken)
        return pairs

    def _pair_one(self, expected: ExpectedNode, actual: Node | None) -> _Pair:
        if actual is None:
            return _expected_only(expected)
        children = self.pair(expected.children, expected.more_children, actual.children)
        return _Pair(expected, actual, not label_matches(expected, actual.span), children)


def label_matches(expected: ExpectedNode, span: Span) -> bool:
    """Service, kind and name equal (`*` as expected name matches any name)."""
    service, kind, name = _label(span)
    return (
        expected.service == service
        and expected.kind == kind
        and (expected.name == WILDCARD_NAME or expected.name == name)
    )


def _expected_only(node: ExpectedNode) -> _Pair:
    children = [_expected_only(child) for child in node.children]
    if node.more_children:
        children.append(_Pair(_ELLIPSIS, None, differs=False))
    return _Pair(node, None, True, children)


def _actual_only(node: Node, differs: bool) -> _Pair:
    return _Pair(None, node, differs, [_actual_only(child, differs) for child in node.children])


L = TypeVar("L")
R = TypeVar("R")


def _max_matching(
    left: Sequence[L], right: Sequence[R], compatible: Callable[[L, R], bool]
) -> dict[int, int]:
    """Maximum bipartite matching (Kuhn's augmenting paths): {left index: right index}.

    Greedy matching is not enough: with a `*` name, the wildcard may grab the span a later, exact line
    needs. Sibling groups are small, so the simple algorithm is plenty.
    """
    edges = [[j for j, r in enumerate(right) if compatible(item, r)] for item in left]
    owner: dict[int, int] = {}  # right index -> left index

    def assign(i: int, seen: set[int]) -> bool:
        for j in edges[i]:
            if j in seen:
                continue
            seen.add(j)
            if j not in owner or assign(owner[j], seen):
                owner[j] = i
                return True
        return False

    for i in range(len(left)):
        assign(i, set())
    return {i: j for j, i in owner.items()}


def _extend_matching(
    partner: dict[int, int], left: Sequence[L], right: Sequence[R], compatible: Callable[[L, R], bool]
) -> None:
    """Add to `partner` a maximum matching among the items it leaves unmatched."""
    free_left = [i for i in range(len(left)) if i not in partner]
    taken = set(partner.values())
    free_right = [j for j in range(len(right)) if j not in taken]
    extra = _max_matching([left[i] for i in free_left], [right[j] for j in free_right], compatible)
    for i, j in extra.items():
        partner[free_left[i]] = free_right[j]


def _ordered_node(pair: _Pair) -> Node:
    assert pair.actual is not None
    children = [_ordered_node(child) for child in pair.children if child.actual is not None]
    return Node(pair.actual.span, children, pair.actual.orphan)


def _mismatch_message(trace_id: str, pairs: list[_Pair], actual: list[Node]) -> str:
    left = _side_texts(pairs, expected_side=True)
    right = _side_texts(pairs, expected_side=False)
    rows = [(pair.differs, left.get(id(pair), ""), right.get(id(pair), "")) for pair in _walk_pairs(pairs)]
    width = max([len("expected")] + [len(text) for _, text, _ in rows])
    lines = [
        f"trace {trace_id}: span tree does not match"
        f" ({DIFF_MARK} marks differing lines; sibling order is ignored)",
        f"  {'expected':<{width}}  │ actual",
    ]
    lines += [
        f"{DIFF_MARK if differs else ' '} {exp:<{width}}  │ {act}".rstrip() for differs, exp, act in rows
    ]
    lines += ["", "actual tree (text form):", render_text(actual, mark_errors=True)]
    return "\n".join(lines)


def _walk_pairs(pairs: Sequence[_Pair]) -> Iterator[_Pair]:
    for pair in pairs:
        yield pair
        yield from _walk_pairs(pair.children)


def _side_texts(pairs: list[_Pair], expected_side: bool) -> dict[int, str]:
    """Text of each pair's line on one side, prefixes computed among that side's lines only."""

    def present(pair: _Pair) -> bool:
        return (pair.expected if expected_side else pair.actual) is not None

    def children_of(pair: _Pair) -> list[_Pair]:
        return [child for child in pair.children if present(child)]

    roots = [pair for pair in pairs if present(pair)]
    entries = list(_with_prefixes(roots, children_of))
    if expected_side:
        base = _service_base(entry.item.expected.service for entry in entries if entry.item.expected)
        return {
            id(entry.item): _expected_line(_Prefixed(entry.depth, entry.prefix, entry.item.expected), base)
            for entry in entries
            if entry.item.expected
        }
    base = _service_base(_label(entry.item.actual.span)[0] for entry in entries if entry.item.actual)
    return {
        id(entry.item): format_columns(entry.prefix, entry.depth, *_label(entry.item.actual.span), base)
        + annotations(entry.item.actual, mark_errors=True)
        for entry in entries
        if entry.item.actual
    }
