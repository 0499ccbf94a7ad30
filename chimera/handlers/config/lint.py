"""Bundle lint: every error with its position, plus warnings a reviewer should see before a promote.

Errors (the bundle cannot be created): JSON syntax, schema, each rule's id/when/then (the DSL
whitelist of fields, operators, actions and their ranges: ``dsl.ACTIONS``), the strategy's other
sections as S3's parser checks them. Each error names its JSON path, the rule id when there is one,
the offset inside ``when`` and, when the file text is known, the line and column in the file.

Warnings (allowed, shown): ``size_mult`` above 1 (a rule that *adds* risk), rules that cannot fire
(``when`` is constant false, or an earlier always-firing rule has ``stop: true``), and, given sample
contexts (the dry-run passes the stored signals), rules that skip most entries or never fire.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from chimera.errors import PermanentError
from chimera.handlers.strategy.bundle import parse as parse_strategy
from chimera.handlers.strategy.bundle import rule_fields
from chimera.handlers.strategy.dsl import ACTIONS, lint_rules
from chimera.handlers.strategy.dsl_expr import Const
from chimera.handlers.strategy.dsl_expr import parse as parse_expr
from chimera.handlers.strategy.dsl_lex import RuleError
from chimera.schemas.documents.config import LintIssue, LintReport

SKIPS_MOST = 0.5  # a rule skipping more than half of the sampled entries gets a warning
_ACTION_WORDS = tuple(ACTIONS) + ("'then'", "unknown action")


class _Locator:
    """Maps a JSON path (and an offset in a ``when`` string) to a line/column of the file text."""

    def __init__(self, text: str | None) -> None:
        self.text = text

    def _line_col(self, offset: int) -> tuple[int, int]:
        before = self.text[:offset]
        return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1

    def at(self, key: str | None = None, value: str | None = None, after: int = 0,
           expr_pos: int | None = None) -> tuple[int | None, int | None, int]:
        if not self.text:
            return None, None, after
        off = -1
        if value is not None:
            enc = json.dumps(value)[1:-1]
            off = self.text.find(enc, after)
            if off >= 0 and expr_pos is not None and "\\" not in enc[:expr_pos]:
                off += expr_pos
        if off < 0 and key is not None:
            m = re.compile(r'"' + re.escape(key) + r'"\s*:').search(self.text, after)
            off = m.start() if m else -1
        if off < 0:
            return None, None, after
        return (*self._line_col(off), off)


def _issue(loc: _Locator, severity: str, code: str, message: str, path: str, *, rule_id: str | None = None,
           key: str | None = None, value: str | None = None, expr_pos: int | None = None, after: int = 0) -> LintIssue:
    line, col, _ = loc.at(key, value, after, expr_pos)
    return LintIssue(severity=severity, code=code, message=message, path=path, rule_id=rule_id, line=line,
                     column=col, expr_pos=expr_pos)


def lint_text(text: str) -> tuple[dict | None, LintReport]:
    """Lint a bundle file's text: a JSON syntax error is reported with its line and column."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, LintReport(ok=False, errors=[LintIssue(severity="error", code="E_JSON", message=exc.msg,
                                                            path="$", line=exc.lineno, column=exc.colno)])
    return body, lint(body, text)


def lint(body: Any, text: str | None = None, samples: Sequence[Mapping[str, Any]] = ()) -> LintReport:
    loc = _Locator(text)
    errors: list[LintIssue] = []
    warnings: list[LintIssue] = []
    if not isinstance(body, Mapping):
        return LintReport(ok=False, errors=[LintIssue(severity="error", code="E_SCHEMA", path="$",
                                                      message="a bundle is a JSON object with a 'strategy' section")])
    for key in ("bundle_id",):
        if key in body and not (isinstance(body[key], str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", body[key])):
            errors.append(_issue(loc, "error", "E_SCHEMA", "bundle_id must match [A-Za-z0-9_.-]{1,64}", key, key=key))
    strategy = body.get("strategy")
    if not isinstance(strategy, Mapping):
        errors.append(_issue(loc, "error", "E_SCHEMA", "field 'strategy' is missing or not an object; S3 has nothing "
                             "to trade", "strategy", key="strategy"))
        return LintReport(ok=False, errors=errors, warnings=warnings)
    try:
        fields = rule_fields(body.get("features"))
    except ValueError as exc:
        errors.append(_issue(loc, "error", "E_FEATURES", str(exc), "features.sma_windows", key="sma_windows"))
        fields = rule_fields(None)
    entry = strategy.get("entry") or {}
    for side in ("long_when", "short_when"):
        expr = entry.get(side) if isinstance(entry, Mapping) else None
        if expr is None:
            continue
        try:
            if not isinstance(expr, str):
                raise RuleError("must be a string")
            parse_expr(expr, fields)
        except RuleError as e:
            errors.append(_issue(loc, "error", "E_ENTRY", e.message, f"strategy.entry.{side}", rule_id=side,
                                 key=side, value=expr if isinstance(expr, str) else None, expr_pos=e.pos))
    rules = strategy.get("rules", [])
    compiled, problems = lint_rules(rules, fields)
    rules_at = loc.at("rules")[2]
    for index, e in problems:
        raw = rules[index] if index is not None and isinstance(rules, Sequence) else None
        raw = raw if isinstance(raw, Mapping) else {}
        field = "when" if e.pos is not None else ("then" if any(w in e.message for w in _ACTION_WORDS) else "")
        path = "strategy.rules" + (f"[{index}]" if index is not None else "") + (f".{field}" if field else "")
        when = raw.get("when") if isinstance(raw.get("when"), str) else None
        anchor = loc.at(None, raw.get("id"), rules_at)[2] if isinstance(raw.get("id"), str) else rules_at
        code = "E_RULE" if field != "then" else ("E_ACTION_RANGE" if "outside" in e.message else "E_ACTION")
        errors.append(_issue(loc, "error", code, e.message, path, rule_id=e.rule_id, key=field or "rules",
                             value=when if field == "when" else None, expr_pos=e.pos, after=anchor))
    try:  # everything else S3 checks (sizing, windows, risk, model), with the rules already reported above
        rest = copy.deepcopy(dict(strategy))
        rest["rules"], rest["entry"] = [], {}
        parse_strategy(rest, "lint", 0, features=None)
    except PermanentError as exc:
        msg = str(exc).split("is invalid: ", 1)[-1]
        section = next((s for s in ("sizing", "trading_windows", "risk", "model", "protections", "health")
                        if s in msg or s in str(exc.__cause__)), "")
        errors.append(_issue(loc, "error", "E_STRATEGY", msg, "strategy" + (f".{section}" if section else ""),
                             key=section or "strategy"))
    if isinstance(rules, Sequence) and not isinstance(rules, str | bytes):
        warnings += _rule_warnings(loc, rules, compiled, samples, rules_at)
    return LintReport(ok=not errors, errors=errors, warnings=warnings)


def _rule_warnings(loc: _Locator, rules: Sequence, compiled, samples, rules_at: int) -> list[LintIssue]:
    out: list[LintIssue] = []
    by_id = {r.get("id"): (i, r) for i, r in enumerate(rules) if isinstance(r, Mapping)}

    def warn(code: str, rid: str, message: str, field: str = "") -> None:
        i, raw = by_id.get(rid, (None, {}))
        anchor = loc.at(None, rid, rules_at)[2]
        out.append(_issue(loc, "warning", code, message, f"strategy.rules[{i}]" + (f".{field}" if field else ""),
                          rule_id=rid, key=field or "id", after=anchor))

    for rid, (_i, raw) in by_id.items():
        then = raw.get("then")
        sm = then.get("size_mult") if isinstance(then, Mapping) else None
        if isinstance(sm, int | float) and not isinstance(sm, bool) and sm > 1:
            warn("W_SIZE_MULT_GT_1", rid, f"size_mult {sm:g} > 1 adds risk to every entry it fires on", "then")
    if compiled is None:
        return out
    stopper = None
    for rule in compiled.rules:  # evaluation order
        if isinstance(rule.when, Const) and not rule.when.value:
            warn("W_UNREACHABLE", rule.id, "'when' is always false: the rule never fires", "when")
        elif stopper is not None:
            warn("W_UNREACHABLE", rule.id, f"rule {stopper!r} always fires first and has stop: true", "when")
        if stopper is None and rule.stop and isinstance(rule.when, Const) and rule.when.value:
            stopper = rule.id
    if samples:
        fired = {r.id: 0 for r in compiled.rules}
        skips = {r.id: 0 for r in compiled.rules}
        for ctx in samples:
            outcome = compiled.evaluate(ctx)
            for rid in outcome.fired:
                fired[rid] += 1
                if by_id[rid][1].get("then", {}).get("skip_entry"):
                    skips[rid] += 1
        n = len(samples)
        for rid in fired:
            if skips[rid] / n > SKIPS_MOST:
                warn("W_SKIPS_MOST", rid, f"skips {skips[rid]} of {n} sampled entries ({skips[rid] / n:.0%})")
            elif fired[rid] == 0:
                warn("W_NEVER_FIRED", rid, f"fired on none of {n} sampled entries")
    return out


def format_issue(path: str, issue: LintIssue) -> str:
    """``FILE:LINE:COL: error E_RULE [rule too_wild] strategy.rules[0].when: message`` (compiler style)."""
    where = f"{path}:{issue.line}:{issue.column}" if issue.line else path
    rule = f" [rule {issue.rule_id}]" if issue.rule_id else ""
    expr = f" (at offset {issue.expr_pos} of 'when')" if issue.expr_pos is not None else ""
    return f"{where}: {issue.severity} {issue.code}{rule} {issue.path}: {issue.message}{expr}"
