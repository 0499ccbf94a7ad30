"""L1 rules DSL: compile a bundle's rules once per config rev, evaluate per decision.

Composition (see docs/rules_dsl.md): rules run by descending ``priority`` (ties keep
bundle order); multipliers of every fired rule multiply and the product is clamped to the
action's range; ``skip_entry`` is sticky (any fired rule skipping skips); the highest-
priority fired rule that sets ``max_adds_override`` wins; a fired rule with ``stop: true``
ends evaluation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from chimera.handlers.strategy.dsl_expr import Field, Node, normalize_fields, parse
from chimera.handlers.strategy.dsl_lex import RuleError

MAX_RULES = 256
MAX_PRIORITY = 1_000_000
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")

_REGIMES = frozenset({"FROZEN", "NORMAL", "EXTREME"})
_NUM = Field("number")

# Field names match what S2 emits (docs/features.md) plus S3's own time and side context.
DEFAULT_FIELDS: Mapping[str, Field] = {
    **{name: _NUM for name in (
        "atr", "atr_pct", "rv_15", "rv_60", "rv_240", "rv_15_ann", "rv_60_ann", "rv_240_ann",
        "rho", "mid", "spread_bp", "depth_bid", "depth_ask", "depth_imbalance",
        "funding_rate", "funding_predicted", "hour_utc", "weekday", "minutes_to_funding",
    )},
    "regime": Field("string", _REGIMES),
    "side": Field("string", frozenset({"LONG", "SHORT"})),
}

# action -> (kind, low, high); ranges are inclusive.
ACTIONS: Mapping[str, tuple[str, float, float]] = {
    "skip_entry": ("bool", 0, 1),
    "size_mult": ("float", 0.0, 5.0),
    "tp_mult": ("float", 0.1, 10.0),
    "sl_mult": ("float", 0.1, 10.0),
    "max_adds_override": ("int", 0, 10),
}
_MULTS = ("size_mult", "tp_mult", "sl_mult")
_RULE_KEYS = frozenset({"id", "priority", "when", "then", "stop", "enabled", "description"})


class RuleOutcome(msgspec.Struct, frozen=True, kw_only=True):
    skip_entry: bool = False
    size_mult: float = 1.0
    tp_mult: float = 1.0
    sl_mult: float = 1.0
    max_adds_override: int | None = None
    fired: tuple[str, ...] = ()  # in application order
    missing: tuple[str, ...] = ()  # fields read but absent/None/NaN (their comparisons were False)
    clamped: tuple[str, ...] = ()  # multipliers whose product left the range and was clamped


@dataclass(frozen=True, slots=True)
class CompiledRule:
    id: str
    priority: int
    when: Node
    text: str
    actions: Mapping[str, Any]
    stop: bool
    fields: frozenset[str]


@dataclass(frozen=True, slots=True)
class CompiledRuleSet:
    rules: tuple[CompiledRule, ...]  # already in evaluation order

    @property
    def fields_used(self) -> frozenset[str]:
        return frozenset().union(*(r.fields for r in self.rules))

    def evaluate(self, context: Mapping[str, Any]) -> RuleOutcome:
        missing: set[str] = set()
        fired: list[str] = []
        mults = dict.fromkeys(_MULTS, 1.0)
        skip, max_adds = False, None
        for rule in self.rules:
            if not rule.when.holds(context, missing):
                continue
            fired.append(rule.id)
            a = rule.actions
            skip = skip or a.get("skip_entry", False)
            for m in _MULTS:
                if m in a:
                    mults[m] *= a[m]
            if max_adds is None:
                max_adds = a.get("max_adds_override")
            if rule.stop:
                break
        clamped = []
        for m in _MULTS:
            lo, hi = ACTIONS[m][1:]
            if not lo <= mults[m] <= hi:
                clamped.append(m)
                mults[m] = min(max(mults[m], lo), hi)
        return RuleOutcome(skip_entry=skip, max_adds_override=max_adds, fired=tuple(fired),
                           missing=tuple(sorted(missing)), clamped=tuple(clamped), **mults)


def compile_rules(rules: Sequence[Mapping[str, Any]],
                  fields: Mapping[str, Field | str] | Iterable[str] = DEFAULT_FIELDS) -> CompiledRuleSet:
    """Validate and compile every rule; the first problem raises ``RuleError``."""
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
        raise RuleError("rules must be a list of rule mappings")
    if len(rules) > MAX_RULES:
        raise RuleError(f"more than {MAX_RULES} rules")
    spec = normalize_fields(fields)
    compiled: list[tuple[int, int, CompiledRule]] = []
    seen: set[str] = set()
    for index, raw in enumerate(rules):
        rule = _compile_one(raw, index, spec)
        if rule is None:
            continue
        if rule.id in seen:
            raise RuleError("duplicate rule id", rule_id=rule.id)
        seen.add(rule.id)
        compiled.append((-rule.priority, index, rule))
    compiled.sort(key=lambda t: t[:2])
    return CompiledRuleSet(tuple(r for *_, r in compiled))


def _compile_one(raw: Any, index: int, fields: Mapping[str, Field]) -> CompiledRule | None:
    if not isinstance(raw, Mapping):
        raise RuleError(f"rule #{index} is not a mapping")
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID_RE.fullmatch(rule_id):
        raise RuleError(f"rule #{index}: 'id' must match {_ID_RE.pattern}", rule_id=_safe_id(rule_id))
    extra = sorted(set(raw) - _RULE_KEYS, key=str)
    if extra:
        raise RuleError(f"unknown rule key {extra[0]!r}", rule_id=rule_id)
    enabled = raw.get("enabled", True)
    stop = raw.get("stop", False)
    for key, flag in (("enabled", enabled), ("stop", stop)):
        if not isinstance(flag, bool):
            raise RuleError(f"'{key}' must be true or false", rule_id=rule_id)
    priority = raw.get("priority", 0)
    if not _is_int(priority) or abs(priority) > MAX_PRIORITY:
        raise RuleError(f"'priority' must be an integer within ±{MAX_PRIORITY}", rule_id=rule_id)
    text = raw.get("when")
    if not isinstance(text, str) or not text.strip():
        raise RuleError("'when' must be a non-empty string", rule_id=rule_id)
    try:
        node, used = parse(text, fields)
    except RuleError as e:
        raise e.with_rule(rule_id, text) from None
    actions = _check_actions(raw.get("then"), rule_id)
    if not enabled:  # still validated, so disabling a rule never hides a broken one
        return None
    return CompiledRule(rule_id, priority, node, text, actions, stop, used)


def _check_actions(then: Any, rule_id: str) -> Mapping[str, Any]:
    if not isinstance(then, Mapping) or not then:
        raise RuleError("'then' must be a non-empty mapping of actions", rule_id=rule_id)
    out: dict[str, Any] = {}
    for name, value in then.items():
        if name not in ACTIONS:
            raise RuleError(f"unknown action {name!r}", rule_id=rule_id)
        kind, lo, hi = ACTIONS[name]
        if kind == "bool":
            if not isinstance(value, bool):
                raise RuleError(f"{name} must be true or false", rule_id=rule_id)
        elif kind == "int":
            if not _is_int(value):
                raise RuleError(f"{name} must be an integer", rule_id=rule_id)
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise RuleError(f"{name} must be a finite number", rule_id=rule_id)
        if kind != "bool" and not lo <= value <= hi:
            raise RuleError(f"{name} {value:g} outside [{lo:g}, {hi:g}]", rule_id=rule_id)
        out[name] = float(value) if kind == "float" else value
    return out


def time_fields(as_of_ms: int) -> dict[str, int]:
    """``hour_utc`` (0-23) and ``weekday`` (Monday=0) of an epoch-ms time, for the context."""
    days, rem = divmod(as_of_ms, 86_400_000)
    return {"hour_utc": rem // 3_600_000, "weekday": (days + 3) % 7}  # 1970-01-01 was a Thursday


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _safe_id(v: Any) -> str | None:
    return v[:64] if isinstance(v, str) else None


def lint_rules(rules: Any, fields: Mapping[str, Field | str] | Iterable[str] = DEFAULT_FIELDS,
               ) -> tuple[CompiledRuleSet | None, list[tuple[int | None, RuleError]]]:
    """Every problem of a rule list, not just the first (a bundle lint shows them all at once).

    Returns the compiled set when nothing is wrong, and ``(rule index, error)`` pairs (index None:
    the list itself); each error keeps its rule id and its position in ``when``.
    """
    if isinstance(rules, str | bytes | Mapping) or not isinstance(rules, Sequence):
        return None, [(None, RuleError("rules must be a list of rule mappings"))]
    problems: list[tuple[int | None, RuleError]] = []
    if len(rules) > MAX_RULES:
        problems.append((None, RuleError(f"more than {MAX_RULES} rules")))
    spec = normalize_fields(fields)
    seen: set[str] = set()
    for index, raw in enumerate(rules):
        try:
            rule = _compile_one(raw, index, spec)
        except RuleError as e:
            problems.append((index, e))
            continue
        rid = raw.get("id")
        if rid in seen:
            problems.append((index, RuleError("duplicate rule id", rule_id=rid)))
        seen.add(rid)
        del rule
    return (None if problems else compile_rules(rules, fields)), problems
