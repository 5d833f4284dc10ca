"""A small parser for Grafana Alloy's configuration syntax, enough to check our config.alloy structurally.

No package on PyPI, npm or Debian parses Alloy syntax (the real parser is Go, inside the `alloy` binary,
which is not installable here), so the static tests parse it themselves: blocks (`loki.process "name" {
... }`), attributes (`name = expr`), and expressions (strings, numbers, bools, null, lists, objects,
references such as `loki.write.loki.receiver`, calls such as `sys.env("X")`, unary and binary operators).
Comments (`//`, `/* */`) are skipped. A syntax error raises AlloySyntaxError with the line number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


class AlloySyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Ref:
    """A reference to another component's export or a standard-library value, e.g. loki.write.x.receiver."""

    path: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class Call:
    function: tuple[str, ...]
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Operation:
    operator: str
    operands: tuple[Any, ...]


@dataclass
class Attribute:
    name: str
    value: Any
    line: int


@dataclass
class Block:
    name: str  # e.g. "loki.process" or "stage.json"
    label: str | None  # e.g. "tracehop"; None for unlabelled blocks
    body: list[Attribute | Block] = field(default_factory=list)
    line: int = 0

    def attributes(self) -> dict[str, Any]:
        return {item.name: item.value for item in self.body if isinstance(item, Attribute)}

    def blocks(self, name: str | None = None) -> list[Block]:
        return [item for item in self.body if isinstance(item, Block) and (name is None or item.name == name)]


_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[-+*/%^<>!])
  | (?P<punct>[{}\[\]().,=])
    """,
    re.VERBOSE | re.DOTALL,
)
_BINARY_PRECEDENCE = {
    "||": 1, "&&": 2, "==": 3, "!=": 3, "<": 3, "<=": 3, ">": 3, ">=": 3,
    "+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "^": 6,
}  # fmt: skip
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int


def _tokens(source: str) -> list[_Token]:
    tokens, position, line = [], 0, 1
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None:
            raise AlloySyntaxError(f"line {line}: unexpected character {source[position]!r}")
        kind, text = match.lastgroup or "", match.group()
        if kind not in ("space", "comment"):
            tokens.append(_Token(kind, text, line))
        line += text.count("\n")
        position = match.end()
    tokens.append(_Token("end", "", line))
    return tokens


def _unquote(token: _Token) -> str:
    if token.kind == "raw":
        return token.text[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), token.text[1:-1])


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = _tokens(source)
        self.index = 0

    # -- token helpers
    def peek(self, offset: int = 0) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.index += 1
        return token

    def expect(self, text: str) -> _Token:
        token = self.take()
        if token.text != text or token.kind in ("string", "raw"):
            raise AlloySyntaxError(
                f"line {token.line}: expected {text!r}, found {token.text or 'end of file'!r}"
            )
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.text == text and token.kind in ("punct", "op")

    # -- statements
    def body(self, closing: str | None) -> list[Attribute | Block]:
        items: list[Attribute | Block] = []
        while not (self.peek().kind == "end" if closing is None else self.at(closing)):
            if self.peek().kind == "end":
                raise AlloySyntaxError(f"line {self.peek().line}: missing {closing!r}")
            items.append(self.statement())
        return items

    def statement(self) -> Attribute | Block:
        first = self.take()
        if first.kind != "ident":
            raise AlloySyntaxError(
                f"line {first.line}: expected a block or attribute name, found {first.text!r}"
            )
        if self.at("="):
            self.take()
            return Attribute(first.text, self.expression(), first.line)
        parts = [first.text]
        while self.at("."):
            self.take()
            part = self.take()
            if part.kind != "ident":
                raise AlloySyntaxError(f"line {part.line}: bad block name after {'.'.join(parts)!r}")
            parts.append(part.text)
        label = None
        if self.peek().kind == "string":
            label = _unquote(self.take())
        self.expect("{")
        body = self.body("}")
        self.expect("}")
        return Block(".".join(parts), label, body, first.line)

    # -- expressions
    def expression(self, min_precedence: int = 1) -> Any:
        left = self.unary()
        while True:
            token = self.peek()
            precedence = _BINARY_PRECEDENCE.get(token.text) if token.kind == "op" else None
            if precedence is None or precedence < min_precedence:
                return left
            self.take()
            right = self.expression(precedence + 1)
            left = Operation(token.text, (left, right))

    def unary(self) -> Any:
        if self.peek().kind == "op" and self.peek().text in ("!", "-"):
            operator = self.take().text
            return Operation(operator, (self.unary(),))
        return self.postfix()

    def postfix(self) -> Any:
        value = self.primary()
        while True:
            if self.at(".") and isinstance(value, Ref):
                self.take()
                part = self.take()
                if part.kind != "ident":
                    raise AlloySyntaxError(f"line {part.line}: expected a name after '.'")
                value = Ref((*value.path, part.text))
            elif self.at("("):
                self.take()
                args = []
                while not self.at(")"):
                    args.append(self.expression())
                    if not self.at(")"):
                        self.expect(",")
                self.expect(")")
                function = value.path if isinstance(value, Ref) else ("<expression>",)
                value = Call(function, tuple(args))
            elif self.at("["):
                self.take()
                index = self.expression()
                self.expect("]")
                value = Operation("[]", (value, index))
            else:
                return value

    def primary(self) -> Any:
        token = self.take()
        if token.kind in ("string", "raw"):
            return _unquote(token)
        if token.kind == "number":
            return float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        if token.kind == "ident":
            return {"true": True, "false": False, "null": None}.get(token.text, Ref((token.text,)))
        if token.text == "(":
            value = self.expression()
            self.expect(")")
            return value
        if token.text == "[":
            items = []
            while not self.at("]"):
                items.append(self.expression())
                if not self.at("]"):
                    self.expect(",")
            self.expect("]")
            return items
        if token.text == "{":
            return self.object_body()
        raise AlloySyntaxError(
            f"line {token.line}: unexpected {token.text or 'end of file'!r} in an expression"
        )

    def object_body(self) -> dict[str, Any]:
        items: dict[str, Any] = {}
        while not self.at("}"):
            key = self.take()
            if key.kind not in ("ident", "string"):
                raise AlloySyntaxError(f"line {key.line}: expected an object key, found {key.text!r}")
            name = key.text if key.kind == "ident" else _unquote(key)
            if name in items:
                raise AlloySyntaxError(f"line {key.line}: duplicate object key {name!r}")
            self.expect("=")
            items[name] = self.expression()
            if not self.at("}"):
                self.expect(",")
        self.expect("}")
        return items


def parse(source: str) -> list[Attribute | Block]:
    """The top-level statements of an Alloy configuration file."""
    return _Parser(source).body(None)


def references(value: Any) -> Iterator[Ref]:
    """Every reference inside an expression (not the names of called functions)."""
    if isinstance(value, Ref):
        yield value
    elif isinstance(value, Call):
        for arg in value.args:
            yield from references(arg)
    elif isinstance(value, Operation):
        for operand in value.operands:
            yield from references(operand)
    elif isinstance(value, list):
        for item in value:
            yield from references(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)


def walk_blocks(items: list[Attribute | Block]) -> Iterator[Block]:
    for item in items:
        if isinstance(item, Block):
            yield item
            yield from walk_blocks(item.body)
