"""The numeric parameters of a bundle's strategy and a copy of the bundle with one of them moved.

Parameters: every number literal in the entry conditions and in each rule's ``when`` (by position,
so ``rules.too_wild.when#0`` is the first number of rule ``too_wild``), each rule's numeric action
(``rules.<id>.then.size_mult``), and the sizing multiples ``sizing.tp_atr`` / ``sizing.sl_atr``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from chimera.handlers.strategy.dsl_lex import T, tokenize


@dataclass(frozen=True)
class Param:
    name: str
    value: float
    where: tuple  # ("when", side|rule index, token pos, token text) | ("then", rule index, action) | ("sizing", key)


def numeric_params(body: Mapping[str, Any]) -> list[Param]:
    strat = body.get("strategy") or {}
    out: list[Param] = []

    def numbers(text: str, prefix: str, ref) -> None:
        k = 0
        for tok in tokenize(text):
            if tok.kind is T.NUMBER:
                out.append(Param(f"{prefix}#{k}", float(tok.value), ("when", ref, tok.pos, tok.text)))
                k += 1

    for side in ("long_when", "short_when"):
        text = (strat.get("entry") or {}).get(side)
        if isinstance(text, str):
            numbers(text, f"entry.{side}", side)
    for i, rule in enumerate(strat.get("rules") or []):
        if not rule.get("enabled", True):
            continue
        numbers(rule["when"], f"rules.{rule['id']}.when", i)
        for action, v in (rule.get("then") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool) and action != "max_adds_override":
                out.append(Param(f"rules.{rule['id']}.then.{action}", float(v), ("then", i, action)))
    for key in ("tp_atr", "sl_atr"):
        v = (strat.get("sizing") or {}).get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append(Param(f"sizing.{key}", float(v), ("sizing", key)))
    return out


def with_value(body: Mapping[str, Any], p: Param, value: float) -> dict:
    new = copy.deepcopy(dict(body))
    strat = new["strategy"]
    kind = p.where[0]
    if kind == "when":
        _, ref, pos, text = p.where
        holder = strat["entry"] if isinstance(ref, str) else strat["rules"][ref]
        field = ref if isinstance(ref, str) else "when"
        s = holder[field]
        holder[field] = s[:pos] + repr(float(value)) + s[pos + len(text):]
    elif kind == "then":
        strat["rules"][p.where[1]]["then"][p.where[2]] = float(value)
    else:
        strat["sizing"][p.where[1]] = float(value)
    return new
