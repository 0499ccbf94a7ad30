"""Bundle lint: every error with rule id and position (JSON path, file line/column, offset in ``when``),
warnings for size_mult > 1, unreachable rules and rules that skip most entries."""

from __future__ import annotations

import json

from chimera.handlers.config.lint import format_issue, lint, lint_text

BUNDLE = """{
  "bundle_id": "lint_demo",
  "strategy": {
    "entry": {"long_when": "rv_15 > rv_60"},
    "rules": [
      {"id": "ok_rule", "when": "atr_pct > 0.004", "then": {"skip_entry": true}},
      {"id": "bad_op", "when": "atr_pct >> 0.006", "then": {"size_mult": 0.5}},
      {"id": "bad_field", "when": "rv_15 > 1 and atr_pcx < 2", "then": {"tp_mult": 1.2}},
      {"id": "too_big", "when": "rv_15 > 0.001", "then": {"size_mult": 7}},
      {"id": "bad_action", "when": "rv_15 > 0.002", "then": {"leverage": 50}}
    ],
    "sizing": {"market": "FUT", "leverage": 500}
  }
}
"""


def _line_col(text: str, needle: str, extra: int = 0) -> tuple[int, int]:
    off = text.index(needle) + extra
    before = text[:off]
    return before.count("\n") + 1, off - before.rfind("\n")


def test_every_error_with_rule_id_path_and_position():
    body, report = lint_text(BUNDLE)
    assert not report.ok
    by_rule = {e.rule_id: e for e in report.errors}
    # The '>>' is the 9th character of bad_op's when (offset 8): file line 7, the column of that '>>'.
    e = by_rule["bad_op"]
    assert (e.code, e.path, e.expr_pos) == ("E_RULE", "strategy.rules[1].when", 8)
    assert (e.line, e.column) == _line_col(BUNDLE, "atr_pct >> 0.006", 8) == (7, 41)
    assert "'>>'" in e.message
    e = by_rule["bad_field"]
    assert e.path == "strategy.rules[2].when" and e.expr_pos == 14 and "atr_pcx" in e.message
    assert (e.line, e.column) == _line_col(BUNDLE, "rv_15 > 1 and atr_pcx", 14)
    e = by_rule["too_big"]
    assert (e.code, e.path) == ("E_ACTION_RANGE", "strategy.rules[3].then") and "outside [0, 5]" in e.message
    assert e.line == 9
    e = by_rule["bad_action"]
    assert (e.code, e.path) == ("E_ACTION", "strategy.rules[4].then") and "'leverage'" in e.message
    assert e.line == 10
    sizing = [e for e in report.errors if e.code == "E_STRATEGY"]
    assert len(sizing) == 1 and sizing[0].path == "strategy.sizing" and "leverage" in sizing[0].message
    assert sizing[0].line == 12
    assert "ok_rule" not in by_rule and len(report.errors) == 5
    text = format_issue("b.json", by_rule["bad_op"])
    assert text.startswith("b.json:7:41: error E_RULE [rule bad_op] strategy.rules[1].when:")


def test_json_syntax_error_has_line_and_column():
    _, report = lint_text('{\n  "strategy": {"rules": [}\n}')
    (e,) = report.errors
    assert (e.code, e.line, e.column) == ("E_JSON", 2, 26)  # the "}" where a value must come


def test_missing_strategy_and_bad_sma_windows():
    report = lint({"bundle_id": "x", "features": {"sma_windows": [1]}})
    assert [(e.code, e.path) for e in report.errors] == [("E_SCHEMA", "strategy")]
    report = lint({"features": {"sma_windows": [1]}, "strategy": {"rules": []}})
    assert [(e.code, e.path) for e in report.errors] == [("E_FEATURES", "features.sma_windows")]


def test_warnings_size_mult_unreachable_and_skips_most():
    body = {"strategy": {"rules": [
        {"id": "boost", "when": "rv_15 > 0.001", "then": {"size_mult": 1.5}},
        {"id": "never", "when": "false", "then": {"size_mult": 0.5}},
        {"id": "all_stop", "priority": 100, "when": "true", "then": {"tp_mult": 1.1}, "stop": True},
        {"id": "after_stop", "priority": 1, "when": "rv_15 > 0", "then": {"sl_mult": 1.2}},
    ]}}
    report = lint(body, json.dumps(body))
    assert report.ok
    got = sorted((w.code, w.rule_id) for w in report.warnings)
    # boost and never come after the always-firing stop rule in evaluation order (priority 0 < 100).
    assert got == [("W_SIZE_MULT_GT_1", "boost"), ("W_UNREACHABLE", "after_stop"), ("W_UNREACHABLE", "boost"),
                   ("W_UNREACHABLE", "never")]
    skipper = {"strategy": {"rules": [{"id": "wide", "when": "atr_pct > 0.001", "then": {"skip_entry": True}},
                                      {"id": "rare", "when": "atr_pct > 0.5", "then": {"size_mult": 0.5}}]}}
    samples = [{"atr_pct": x} for x in (0.0005, 0.002, 0.003, 0.004)]  # 3 of 4 above 0.001
    report = lint(skipper, None, samples=samples)
    got = {w.rule_id: (w.code, w.message) for w in report.warnings}
    assert got["wide"] == ("W_SKIPS_MOST", "skips 3 of 4 sampled entries (75%)")
    assert got["rare"][0] == "W_NEVER_FIRED"


def test_shipped_sample_bundle_is_clean():
    with open("chimera/bundles/sample_vol_breakout.json") as fh:
        _, report = lint_text(fh.read())
    assert report.ok and report.errors == [] and report.warnings == []
