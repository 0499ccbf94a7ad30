"""Tokenizer for the L1 rules DSL.

Hand-written on purpose: rule text comes from config bundles edited by people, so nothing
of it may ever reach ``eval``/``ast``. Anything outside the small whitelist is refused here
with a message that names the construct, so a bundle lint tells the author what to fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

MAX_EXPR_LEN = 4096
MAX_NUMBER = 1e15
MAX_STRING_LEN = 64


class RuleError(ValueError):
    """An invalid rule. ``pos`` is the 0-based character offset in ``when`` (None when the
    problem is not in the expression); ``line``/``col`` are 1-based."""

    def __init__(self, message: str, *, rule_id: str | None = None, pos: int | None = None,
                 text: str | None = None) -> None:
        self.message = message
        self.rule_id = rule_id
        self.pos = pos
        self.line: int | None = None
        self.col: int | None = None
        if pos is not None and text is not None:
            before = text[:pos]
            self.line = before.count("\n") + 1
            self.col = pos - (before.rfind("\n") + 1) + 1
        super().__init__(str(self))

    def with_rule(self, rule_id: str | None, text: str | None = None) -> RuleError:
        return RuleError(self.message, rule_id=rule_id, pos=self.pos, text=text)

    def __str__(self) -> str:
        where = ""
        if self.pos is not None:
            where = f" at {self.pos}"
            if self.line is not None:
                where += f" (line {self.line}, col {self.col})"
        prefix = f"rule {self.rule_id!r}: " if self.rule_id is not None else ""
        return f"{prefix}{self.message}{where}"


class T(Enum):
    NUMBER = "number"
    STRING = "string"
    NAME = "name"
    KEYWORD = "keyword"
    OP = "op"  # comparison operators
    LPAREN = "("
    RPAREN = ")"
    COMMA = ","
    MINUS = "-"
    END = "end of expression"


@dataclass(frozen=True, slots=True)
class Token:
    kind: T
    value: object
    pos: int
    text: str


KEYWORDS = frozenset({"and", "or", "not", "in", "between", "crosses_above", "crosses_below", "true", "false",
                      "True", "False"})
# Python keywords that are not part of the DSL get a precise refusal, not "unknown field".
_FORBIDDEN_WORDS = frozenset({
    "lambda", "import", "from", "if", "else", "elif", "for", "while", "is", "def", "class",
    "return", "yield", "del", "global", "nonlocal", "with", "as", "try", "except", "finally",
    "raise", "assert", "pass", "break", "continue", "await", "async", "None", "exec", "eval",
})
_COMPARISONS = ("<=", ">=", "==", "!=", "<", ">")
_REFUSALS = {
    ".": "attribute access is not allowed",
    "[": "subscripts are not allowed",
    "]": "subscripts are not allowed",
    ";": "';' is not allowed: one expression per rule",
    "&": "bitwise operator '&' is not allowed (use 'and')",
    "|": "bitwise operator '|' is not allowed (use 'or')",
    "^": "bitwise operator '^' is not allowed",
    "~": "bitwise operator '~' is not allowed (use 'not')",
    "+": "arithmetic operator '+' is not allowed",
    "*": "arithmetic operator '*' is not allowed",
    "/": "arithmetic operator '/' is not allowed",
    "%": "arithmetic operator '%' is not allowed",
    "@": "operator '@' is not allowed",
    "=": "'=' is not allowed (use '==')",
    "!": "'!' is not allowed (use 'not' or '!=')",
    "#": "comments are not allowed",
    ":": "':' is not allowed",
    "{": "braces are not allowed",
    "}": "braces are not allowed",
    "\\": "backslash is not allowed",
}


def _is_name_start(c: str) -> bool:
    return c == "_" or ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"  # str.isdigit() also accepts non-ASCII digits like '²'


def _is_name_char(c: str) -> bool:
    return _is_name_start(c) or _is_digit(c)


def tokenize(text: str) -> list[Token]:
    if not isinstance(text, str):
        raise RuleError("'when' must be a string")
    if len(text) > MAX_EXPR_LEN:
        raise RuleError(f"expression longer than {MAX_EXPR_LEN} characters", pos=MAX_EXPR_LEN, text=text)
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif _is_digit(c) or (c == "." and i + 1 < n and _is_digit(text[i + 1])):
            tok, i = _number(text, i)
            tokens.append(tok)
        elif c in "'\"":
            tok, i = _string(text, i)
            tokens.append(tok)
        elif _is_name_start(c):
            j = i + 1
            while j < n and _is_name_char(text[j]):
                j += 1
            word = text[i:j]
            tokens.append(_word(word, i, text))
            i = j
        elif text.startswith(("<<", ">>"), i):
            raise RuleError(f"bitwise operator {text[i:i + 2]!r} is not allowed", pos=i, text=text)
        elif text.startswith(("&&", "||"), i):
            raise RuleError(f"operator {text[i:i + 2]!r} is not allowed (use 'and'/'or')", pos=i, text=text)
        elif text.startswith("**", i):
            raise RuleError("arithmetic operator '**' is not allowed", pos=i, text=text)
        elif (op := next((o for o in _COMPARISONS if text.startswith(o, i)), None)) is not None:
            tokens.append(Token(T.OP, op, i, op))
            i += len(op)
        elif c in "(),-":
            kind = {"(": T.LPAREN, ")": T.RPAREN, ",": T.COMMA, "-": T.MINUS}[c]
            tokens.append(Token(kind, c, i, c))
            i += 1
        elif c in _REFUSALS:
            raise RuleError(_REFUSALS[c], pos=i, text=text)
        else:
            raise RuleError(f"unexpected character {c!r}", pos=i, text=text)
    tokens.append(Token(T.END, None, n, ""))
    return tokens


def _word(word: str, pos: int, text: str) -> Token:
    if word.startswith("__"):
        raise RuleError(f"dunder name {word!r} is not allowed", pos=pos, text=text)
    if word in _FORBIDDEN_WORDS:
        raise RuleError(f"{word!r} is not allowed", pos=pos, text=text)
    if word in KEYWORDS:
        return Token(T.KEYWORD, word.lower(), pos, word)
    return Token(T.NAME, word, pos, word)


def _number(text: str, i: int) -> tuple[Token, int]:
    n, j = len(text), i
    while j < n and _is_digit(text[j]):
        j += 1
    if j < n and text[j] == ".":
        j += 1
        while j < n and _is_digit(text[j]):
            j += 1
    if j < n and text[j] in "eE":
        k = j + 1
        if k < n and text[k] in "+-":
            k += 1
        if k < n and _is_digit(text[k]):
            j = k
            while j < n and _is_digit(text[j]):
                j += 1
    if j < n and (_is_name_char(text[j]) or text[j] == "."):
        end = j
        while end < n and (_is_name_char(text[end]) or text[end] == "."):
            end += 1
        raise RuleError(f"malformed number {text[i:end]!r}", pos=i, text=text)
    raw = text[i:j]
    if len(raw) > 32:
        raise RuleError("number too long", pos=i, text=text)
    value = float(raw)
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise RuleError("number too large", pos=i, text=text)
    return Token(T.NUMBER, value, i, raw), j


def _string(text: str, i: int) -> tuple[Token, int]:
    quote, j = text[i], i + 1
    while j < len(text) and text[j] != quote:
        if text[j] == "\\":
            raise RuleError("escape sequences are not allowed in strings", pos=j, text=text)
        if text[j] == "\n":
            break
        j += 1
    if j >= len(text) or text[j] != quote:
        raise RuleError("unterminated string", pos=i, text=text)
    value = text[i + 1:j]
    if len(value) > MAX_STRING_LEN:
        raise RuleError(f"string longer than {MAX_STRING_LEN} characters", pos=i, text=text)
    return Token(T.STRING, value, i, text[i:j + 1]), j + 1
