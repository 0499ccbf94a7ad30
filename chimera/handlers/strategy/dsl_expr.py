"""Parser, type checker and evaluator for rule conditions (the ``when`` of a rule).

Grammar (keywords are case-sensitive; ``True``/``False`` are accepted as booleans)::

    expr       := and_expr ('or' and_expr)*
    and_expr   := not_expr ('and' not_expr)*
    not_expr   := 'not' not_expr | comparison
    comparison := '(' expr ')'
                | value (CMP value | ['not'] 'between' value 'and' value | ['not'] 'in' list)
                | value ('crosses_above' | 'crosses_below') value    # numbers
                | value                      # only a bool field or literal
    value      := FIELD | NUMBER | '-' NUMBER | STRING | 'true' | 'false'
    list       := '(' literal (',' literal)* [','] ')'
    CMP        := '<' | '<=' | '>' | '>=' | '==' | '!='

``a crosses_above b`` holds when a was below b at the previous bar and is above it now
(``prev_a < prev_b and a > b``; ``crosses_below`` the mirror), backtesting.py's ``crossover``.
The previous bar's values are read from the mapping the context holds under ``PREV`` (S3 puts the
signal's ``prev`` there: S2's bar features at the previous bar); a literal is the same on both
bars. A value missing at either bar makes the crossing False and is reported as missing
(``prev.<name>`` for the previous bar's).

Recursion is bounded by ``MAX_DEPTH`` (parentheses and ``not``), so hostile input cannot
exhaust the Python stack; ``and``/``or`` chains are parsed iteratively.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from chimera.handlers.strategy.dsl_lex import RuleError, T, Token, tokenize

MAX_DEPTH = 32
MAX_IN_ITEMS = 64

Kind = Literal["number", "string", "bool"]


@dataclass(frozen=True, slots=True)
class Field:
    kind: Kind = "number"
    choices: frozenset[str] | None = None  # closed vocabulary: typos fail at compile time


def normalize_fields(fields: Mapping[str, Field | str] | Iterable[str]) -> dict[str, Field]:
    if isinstance(fields, Mapping):
        return {k: v if isinstance(v, Field) else Field(v) for k, v in fields.items()}
    return {k: Field("number") for k in fields}


_MISSING = object()
PREV = "__prev__"  # context key of the previous bar's values (a dunder: no rule can name it)
_EMPTY: Mapping[str, Any] = {}
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "==": operator.eq, "!=": operator.ne}


class Value:
    __slots__ = ("kind", "name", "spec", "value")

    def __init__(self, kind: Kind, name: str | None = None, value: Any = None,
                 spec: Field | None = None) -> None:
        self.kind, self.name, self.value, self.spec = kind, name, value, spec

    def read(self, ctx: Mapping[str, Any], missing: set[str]) -> Any:
        if self.name is None:
            return self.value
        v = ctx.get(self.name)
        if self.kind == "number":
            # bool is an int subclass; a True where a number belongs is a bug upstream.
            ok = isinstance(v, int | float | Decimal) and not isinstance(v, bool)
            v = float(v) if ok else None
            if v is not None and math.isnan(v):
                v = None
        elif not isinstance(v, str if self.kind == "string" else bool):
            v = None
        if v is None:
            missing.add(self.name)
            return _MISSING
        return v


class Node:
    __slots__ = ()

    def holds(self, ctx: Mapping[str, Any], missing: set[str]) -> bool:  # pragma: no cover
        raise NotImplementedError


class Const(Node):
    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def holds(self, ctx, missing):
        return self.value


class Truth(Node):
    __slots__ = ("v",)

    def __init__(self, v: Value) -> None:
        self.v = v

    def holds(self, ctx, missing):
        x = self.v.read(ctx, missing)
        return False if x is _MISSING else bool(x)


class And(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def holds(self, ctx, missing):
        return all(i.holds(ctx, missing) for i in self.items)


class Or(Node):
    __slots__ = ("items",)

    def __init__(self, items: list[Node]) -> None:
        self.items = items

    def holds(self, ctx, missing):
        return any(i.holds(ctx, missing) for i in self.items)


class Not(Node):
    __slots__ = ("item",)

    def __init__(self, item: Node) -> None:
        self.item = item

    def holds(self, ctx, missing):
        return not self.item.holds(ctx, missing)


class Compare(Node):
    __slots__ = ("fn", "left", "right")

    def __init__(self, op: str, left: Value, right: Value) -> None:
        self.fn, self.left, self.right = _OPS[op], left, right

    def holds(self, ctx, missing):
        a, b = self.left.read(ctx, missing), self.right.read(ctx, missing)
        return a is not _MISSING and b is not _MISSING and self.fn(a, b)


class Cross(Node):
    __slots__ = ("above", "left", "right")

    def __init__(self, left: Value, right: Value, above: bool) -> None:
        self.left, self.right, self.above = left, right, above

    def holds(self, ctx, missing):
        a, b = self.left.read(ctx, missing), self.right.read(ctx, missing)
        was: set[str] = set()
        prev = ctx.get(PREV) or _EMPTY
        pa, pb = self.left.read(prev, was), self.right.read(prev, was)
        missing.update(f"prev.{name}" for name in was)
        if _MISSING in (a, b, pa, pb):
            return False
        return pa < pb and a > b if self.above else pa > pb and a < b


class Between(Node):
    __slots__ = ("hi", "lo", "negated", "x")

    def __init__(self, x: Value, lo: Value, hi: Value, negated: bool) -> None:
        self.x, self.lo, self.hi, self.negated = x, lo, hi, negated

    def holds(self, ctx, missing):
        x, lo, hi = (v.read(ctx, missing) for v in (self.x, self.lo, self.hi))
        if _MISSING in (x, lo, hi):
            return False
        return (lo <= x <= hi) != self.negated


class In(Node):
    __slots__ = ("negated", "values", "x")

    def __init__(self, x: Value, values: frozenset, negated: bool) -> None:
        self.x, self.values, self.negated = x, values, negated

    def holds(self, ctx, missing):
        x = self.x.read(ctx, missing)
        return x is not _MISSING and ((x in self.values) != self.negated)


def parse(text: str, fields: Mapping[str, Field]) -> tuple[Node, frozenset[str]]:
    """Compile ``text`` to a node tree; returns it with the set of fields it reads."""
    p = _Parser(text, tokenize(text), fields)
    node = p.parse_or(0)
    if p.peek.kind is not T.END:
        p.fail(f"unexpected {_describe(p.peek)}", p.peek)
    return node, frozenset(p.used)


def _describe(tok: Token) -> str:
    return "end of expression" if tok.kind is T.END else repr(tok.text)


class _Parser:
    def __init__(self, text: str, tokens: list[Token], fields: Mapping[str, Field]) -> None:
        self.text, self.tokens, self.fields, self.i = text, tokens, fields, 0
        self.used: set[str] = set()

    @property
    def peek(self) -> Token:
        return self.tokens[self.i]

    def next(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind is not T.END:
            self.i += 1
        return tok

    def fail(self, message: str, tok: Token) -> None:
        raise RuleError(message, pos=tok.pos, text=self.text)

    def is_kw(self, word: str, offset: int = 0) -> bool:
        tok = self.tokens[min(self.i + offset, len(self.tokens) - 1)]
        return tok.kind is T.KEYWORD and tok.value == word

    def deeper(self, depth: int, tok: Token) -> int:
        if depth + 1 > MAX_DEPTH:
            self.fail(f"nesting deeper than {MAX_DEPTH}", tok)
        return depth + 1

    def parse_or(self, depth: int) -> Node:
        items = [self.parse_and(depth)]
        while self.is_kw("or"):
            self.next()
            items.append(self.parse_and(depth))
        return items[0] if len(items) == 1 else Or(items)

    def parse_and(self, depth: int) -> Node:
        items = [self.parse_not(depth)]
        while self.is_kw("and"):
            self.next()
            items.append(self.parse_not(depth))
        return items[0] if len(items) == 1 else And(items)

    def parse_not(self, depth: int) -> Node:
        if self.is_kw("not"):
            tok = self.next()
            return Not(self.parse_not(self.deeper(depth, tok)))
        return self.parse_comparison(depth)

    def parse_comparison(self, depth: int) -> Node:
        tok = self.peek
        if tok.kind is T.LPAREN:
            self.next()
            node = self.parse_or(self.deeper(depth, tok))
            self.expect(T.RPAREN, "')'")
            if self.peek.kind is T.OP or self.is_kw("in") or self.is_kw("between"):
                self.fail("a parenthesized condition cannot be compared", self.peek)
            return node
        left = self.parse_value()
        op = self.peek
        if op.kind is T.OP:
            self.next()
            right = self.parse_value()
            self.check_compare(op, left, right)
            if self.peek.kind is T.OP:
                self.fail("chained comparisons are not allowed (use 'between')", self.peek)
            return Compare(op.value, left, right)
        if self.is_kw("crosses_above") or self.is_kw("crosses_below"):
            return self.parse_cross(left)
        negated = self.is_kw("not") and (self.is_kw("in", 1) or self.is_kw("between", 1))
        if negated:
            self.next()
        if self.is_kw("between"):
            return self.parse_between(left, negated)
        if self.is_kw("in"):
            return self.parse_in(left, negated, depth)
        if left.kind == "bool":
            return Const(left.value) if left.name is None else Truth(left)
        what = f"field {left.name!r}" if left.name else repr(tok.text)
        self.fail(f"expected a comparison after {what}", op)
        raise AssertionError  # unreachable: fail raises

    def expect(self, kind: T, what: str) -> Token:
        if self.peek.kind is not kind:
            self.fail(f"expected {what}, got {_describe(self.peek)}", self.peek)
        return self.next()

    def parse_value(self) -> Value:
        tok = self.next()
        if tok.kind is T.NAME:
            if self.peek.kind is T.LPAREN:
                self.fail("function calls are not allowed", tok)
            spec = self.fields.get(tok.value)
            if spec is None:
                self.fail(f"unknown field {tok.value!r}", tok)
            self.used.add(tok.value)
            return Value(spec.kind, name=tok.value, spec=spec)
        if tok.kind is T.NUMBER:
            return Value("number", value=tok.value)
        if tok.kind is T.MINUS:
            num = self.peek
            if num.kind is not T.NUMBER:
                self.fail("'-' is only allowed as the sign of a number", tok)
            self.next()
            return Value("number", value=-num.value)
        if tok.kind is T.STRING:
            return Value("string", value=tok.value)
        if tok.kind is T.KEYWORD and tok.value in ("true", "false"):
            return Value("bool", value=tok.value == "true")
        self.fail(f"expected a field or a literal, got {_describe(tok)}", tok)
        raise AssertionError

    def check_compare(self, op: Token, a: Value, b: Value) -> None:
        if a.kind != b.kind:
            self.fail(f"cannot compare {_show(a)} with {_show(b)}", op)
        if a.kind != "number" and op.value not in ("==", "!="):
            self.fail(f"operator {op.value!r} needs numbers, not {a.kind}s", op)
        for x, y in ((a, b), (b, a)):
            if x.name is not None and y.name is None:
                self.check_choice(x, y.value, op)

    def check_choice(self, field: Value, literal: Any, tok: Token) -> None:
        choices = field.spec.choices
        if choices is not None and literal not in choices:
            self.fail(f"unknown value {literal!r} for {field.name!r} "
                      f"(expected one of {', '.join(sorted(choices))})", tok)

    def parse_cross(self, left: Value) -> Node:
        kw = self.next()
        right = self.parse_value()
        for v in (left, right):
            if v.kind != "number":
                self.fail(f"'{kw.value}' needs numbers, got {_show(v)}", kw)
        if left.name is None and right.name is None:
            self.fail(f"'{kw.value}' between two literals never holds: name a field", kw)
        if self.peek.kind is T.OP or self.is_kw("crosses_above") or self.is_kw("crosses_below"):
            self.fail("a crossing cannot be chained or compared", self.peek)
        return Cross(left, right, above=kw.value == "crosses_above")

    def parse_between(self, x: Value, negated: bool) -> Node:
        kw = self.next()
        lo = self.parse_value()
        if not self.is_kw("and"):
            self.fail(f"expected 'and' in 'between', got {_describe(self.peek)}", self.peek)
        self.next()
        hi = self.parse_value()
        for v in (x, lo, hi):
            if v.kind != "number":
                self.fail(f"'between' needs numbers, got {_show(v)}", kw)
        if lo.name is None and hi.name is None and lo.value > hi.value:
            self.fail(f"empty range: {lo.value:g} > {hi.value:g}", kw)
        return Between(x, lo, hi, negated)

    def parse_in(self, x: Value, negated: bool, depth: int) -> Node:
        self.next()
        open_tok = self.expect(T.LPAREN, "'(' after 'in'")
        self.deeper(depth, open_tok)
        items: list[Any] = []
        while True:
            tok = self.peek
            if tok.kind is T.RPAREN:
                if not items:
                    self.fail("empty 'in' list", tok)
                break
            v = self.parse_value()
            if v.name is not None:
                self.fail("only literals are allowed in an 'in' list", tok)
            if v.kind != x.kind:
                self.fail(f"cannot test {_show(x)} against {_show(v)}", tok)
            if x.name is not None:
                self.check_choice(x, v.value, tok)
            items.append(v.value)
            if len(items) > MAX_IN_ITEMS:
                self.fail(f"'in' list longer than {MAX_IN_ITEMS} items", tok)
            if self.peek.kind is T.COMMA:
                self.next()
            elif self.peek.kind is not T.RPAREN:
                self.fail(f"expected ',' or ')', got {_describe(self.peek)}", self.peek)
        self.next()
        return In(x, frozenset(items), negated)


def _show(v: Value) -> str:
    if v.name is not None:
        return f"{v.kind} field {v.name!r}"
    return f"number {v.value:g}" if v.kind == "number" else f"{v.kind} {v.value!r}"
