import math
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest

from chimera.handlers.strategy import (
    DEFAULT_FIELDS,
    Field,
    RuleError,
    RuleOutcome,
    compile_rules,
    time_fields,
)

CTX = {
    "atr": 120.0, "atr_pct": 0.005, "rv_60": 0.3, "rho": 0.8, "spread_bp": 1.2,
    "funding_rate": 0.0001, "funding_predicted": 0.0002, "regime": "NORMAL", "side": "LONG",
    "hour_utc": 13, "weekday": 2, "minutes_to_funding": 45, "depth_imbalance": -0.2,
}


def one(when, then=None, **ctx_overrides):
    rs = compile_rules([{"id": "r", "when": when, "then": then or {"skip_entry": True}}])
    return rs.evaluate({**CTX, **ctx_overrides})


# (when, fires with CTX)
CONDITIONS = [
    ("atr_pct > 0.004 and regime in ('NORMAL','EXTREME') and not funding_rate > 0.0005", True),
    ("atr_pct > 0.006", False),
    ("atr_pct >= 0.005 and atr_pct <= 0.005", True),
    ("atr_pct < 0.005 or atr_pct != 0.005", False),
    ("atr_pct == 0.005", True),
    ("rv_60 between 0.1 and 0.5", True),
    ("rv_60 between 0.3 and 0.3", True),  # inclusive at both ends
    ("rv_60 not between 0.1 and 0.5", False),
    ("rv_60 between 0.31 and 0.5", False),
    ("regime not in ('FROZEN',)", True),
    ("regime in ('FROZEN')", False),
    ('side == "LONG" and hour_utc in (12, 13, 14,)', True),
    ("weekday in (5, 6)", False),
    ("depth_imbalance > -0.5", True),
    ("depth_imbalance < -.1", True),
    ("funding_predicted > funding_rate", True),
    ("not (atr_pct > 0.004 and spread_bp > 1)", False),
    ("not not atr > 100", True),
    ("(atr > 1000 or rho >= 0.8) and (regime == 'NORMAL')", True),
    ("atr > 1 and atr > 2 or atr > 1000", True),  # and binds tighter than or
    ("atr > 1000 and atr > 2 or atr > 1", True),
    ("atr > 1000 or atr > 2 and atr > 1000", False),
    ("true", True),
    ("False", False),
    ("minutes_to_funding\n  <= 60\n  and rho > 0.5", True),
    ("1.5e2 > atr", True),
    ("atr > 1.2E+2", False),
]


@pytest.mark.parametrize(("when", "fires"), CONDITIONS)
def test_conditions(when, fires):
    assert one(when).fired == (("r",) if fires else ())


BUNDLE = [
    {"id": "vol_breakout_long", "priority": 10,
     "when": "atr_pct > 0.004 and regime in ('NORMAL','EXTREME') and not funding_rate > 0.0005",
     "then": {"size_mult": 1.2, "sl_mult": 1.5}},
    {"id": "wide_spread", "priority": 50, "when": "spread_bp > 5", "then": {"skip_entry": True}},
    {"id": "funding_soon", "priority": 20, "when": "minutes_to_funding < 60",
     "then": {"size_mult": 0.5, "tp_mult": 0.8, "max_adds_override": 1}},
    {"id": "calm", "priority": 5, "when": "rv_60 < 0.5", "then": {"max_adds_override": 3, "tp_mult": 2}},
    {"id": "extreme_final", "priority": 100, "stop": True, "when": "regime == 'EXTREME'",
     "then": {"size_mult": 0.25, "max_adds_override": 0}},
    {"id": "disabled", "priority": 1000, "enabled": False, "when": "true", "then": {"skip_entry": True}},
]


# (context overrides, expected outcome fields)
OUTCOMES = [
    ({}, dict(fired=("funding_soon", "vol_breakout_long", "calm"), size_mult=0.6, sl_mult=1.5,
              tp_mult=1.6, max_adds_override=1, skip_entry=False)),
    ({"spread_bp": 7.0}, dict(fired=("wide_spread", "funding_soon", "vol_breakout_long", "calm"),
                              skip_entry=True, size_mult=0.6)),
    ({"minutes_to_funding": 300}, dict(fired=("vol_breakout_long", "calm"), size_mult=1.2,
                                       tp_mult=2.0, max_adds_override=3)),
    ({"regime": "EXTREME"}, dict(fired=("extreme_final",), size_mult=0.25, max_adds_override=0,
                                 tp_mult=1.0, sl_mult=1.0)),
    ({"regime": "FROZEN", "minutes_to_funding": 300, "rv_60": 0.9},
     dict(fired=(), size_mult=1.0, tp_mult=1.0, sl_mult=1.0, max_adds_override=None, skip_entry=False)),
]


@pytest.mark.parametrize(("overrides", "expected"), OUTCOMES)
def test_composition(overrides, expected):
    out = compile_rules(BUNDLE).evaluate({**CTX, **overrides})
    for key, value in expected.items():
        got = getattr(out, key)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, key


def test_ties_keep_bundle_order_and_first_override_wins():
    rules = [{"id": f"r{i}", "priority": 7, "when": "true", "then": {"max_adds_override": i}}
             for i in (4, 2, 9)]
    out = compile_rules(rules).evaluate({})
    assert out.fired == ("r4", "r2", "r9") and out.max_adds_override == 4


def test_product_is_clamped_and_recorded():
    rules = [{"id": f"r{i}", "when": "true", "then": {"size_mult": 2.0, "sl_mult": 0.2}} for i in range(3)]
    out = compile_rules(rules).evaluate({})
    assert out.size_mult == 5.0 and out.sl_mult == 0.1 and out.clamped == ("size_mult", "sl_mult")


def test_missing_field_comparison_is_false_and_recorded():
    out = one("funding_rate > 0.0005 or atr > 1", funding_rate=None)
    assert out.fired == ("r",) and out.missing == ("funding_rate",)
    assert one("atr > 1", atr=math.nan).missing == ("atr",)
    ctx = {k: v for k, v in CTX.items() if k != "regime"}
    rs = compile_rules([{"id": "r", "when": "regime != 'FROZEN'", "then": {"skip_entry": True}}])
    assert rs.evaluate(ctx) == RuleOutcome(missing=("regime",))
    # documented consequence: 'not' negates the False of a missing comparison
    assert one("not funding_rate > 0.0005", funding_rate=None).fired == ("r",)
    assert one("funding_rate <= 0.0005", funding_rate=None).fired == ()
    assert one("rv_60 not between 0 and 1", rv_60=None).fired == ()
    assert one("regime not in ('NORMAL',)", regime=None).fired == ()
    # a wrong type is treated as missing, never compared
    assert one("atr > 1", atr="12").missing == ("atr",)
    assert one("atr > 1", atr=True).missing == ("atr",)


def test_decimal_context_values_and_outcome_serializes():
    out = one("atr > 100", then={"size_mult": 2}, atr=Decimal("120.5"))
    assert out.fired == ("r",) and out.size_mult == 2.0
    assert msgspec.json.decode(msgspec.json.encode(out), type=RuleOutcome) == out


def test_custom_field_whitelist_and_bool_fields():
    rs = compile_rules([{"id": "a", "when": "x > 1 and flag", "then": {"skip_entry": True}}],
                       fields={"x": "number", "flag": Field("bool")})
    assert rs.fields_used == {"x", "flag"}
    assert rs.evaluate({"x": 2, "flag": True}).skip_entry
    assert not rs.evaluate({"x": 2, "flag": False}).skip_entry
    with pytest.raises(RuleError, match="unknown field 'atr'"):
        compile_rules([{"id": "a", "when": "atr > 1", "then": {"skip_entry": True}}], fields=["x"])
    assert "regime" in DEFAULT_FIELDS


# (when, message, pos)
BAD_EXPRESSIONS = [
    ("__import__('os').system('rm -rf /')", "dunder name '__import__' is not allowed", 0),
    ("atr > 1 and __class__ == 1", "dunder name '__class__' is not allowed", 12),
    ("a.b", "attribute access is not allowed", 1),
    ("atr.real > 1", "attribute access is not allowed", 3),
    ("f(x)", "function calls are not allowed", 0),
    ("atr > abs(1)", "function calls are not allowed", 6),
    ("atr > 1e999", "number too large", 6),
    ("atr > 1e16", "number too large", 6),
    ("atr > " + "9" * 40, "number too long", 6),
    ("atr > 0x10", "malformed number '0x10'", 6),
    ("atr > 1.2.3", "malformed number '1.2.3'", 6),
    ("atr > 1_000", "malformed number '1_000'", 6),
    ("(" * 1000 + "atr > 1" + ")" * 1000, "nesting deeper than 32", 32),
    ("not " * 33 + "atr > 1", "nesting deeper than 32", 128),
    ("atr in " + "(" * 40 + "1" + ")" * 40, "expected a field or a literal, got '('", 8),
    ("foo > 1", "unknown field 'foo'", 0),
    ("atr > 1 and\n  bar < 2", "unknown field 'bar'", 14),
    ("regime == 'NORMAL", "unterminated string", 10),
    ("regime == \"NORMAL'", "unterminated string", 10),
    ("regime == 'a\\'b'", "escape sequences are not allowed in strings", 12),
    ("lambda: 1", "'lambda' is not allowed", 0),
    ("atr > 1 if True else 0", "'if' is not allowed", 8),
    ("atr is None", "'is' is not allowed", 4),
    ("atr & 1", "bitwise operator '&' is not allowed (use 'and')", 4),
    ("atr | 1", "bitwise operator '|' is not allowed (use 'or')", 4),
    ("~atr", "bitwise operator '~' is not allowed (use 'not')", 0),
    ("atr ^ 1", "bitwise operator '^' is not allowed", 4),
    ("atr << 1", "bitwise operator '<<' is not allowed", 4),
    ("atr > 1 && rho > 0", "operator '&&' is not allowed (use 'and'/'or')", 8),
    ("atr > 1; rho > 0", "';' is not allowed: one expression per rule", 7),
    ("atr + 1 > 2", "arithmetic operator '+' is not allowed", 4),
    ("atr ** 2 > 2", "arithmetic operator '**' is not allowed", 4),
    ("atr * 2 > 2", "arithmetic operator '*' is not allowed", 4),
    ("-atr > 1", "'-' is only allowed as the sign of a number", 0),
    ("atr = 1", "'=' is not allowed (use '==')", 4),
    ("!atr", "'!' is not allowed (use 'not' or '!=')", 0),
    ("atr[0] > 1", "subscripts are not allowed", 3),
    ("{1: 2}", "braces are not allowed", 0),
    ("atr > 1 # comment", "comments are not allowed", 8),
    ("atr > `1`", "unexpected character '`'", 6),
    ("atr > 1 é", "unexpected character 'é'", 8),
    ("atr > \u0663", "unexpected character '\u0663'", 6),  # Arabic-Indic digit three
    ("0 < atr < 5", "chained comparisons are not allowed (use 'between')", 8),
    ("atr", "expected a comparison after field 'atr'", 3),
    ("atr > ", "expected a field or a literal, got end of expression", 6),
    ("(atr > 1", "expected ')', got end of expression", 8),
    ("atr > 1)", "unexpected ')'", 7),
    ("atr > 1 rho > 2", "unexpected 'rho'", 8),
    ("", "'when' must be a non-empty string", None),
    ("regime > 'NORMAL'", "operator '>' needs numbers, not strings", 7),
    ("regime == 1", "cannot compare string field 'regime' with number 1", 7),
    ("atr == 'x'", "cannot compare number field 'atr' with string 'x'", 4),
    ("regime == 'NORMALL'", "unknown value 'NORMALL' for 'regime' (expected one of EXTREME, FROZEN, NORMAL)", 7),
    ("regime in ('NORMAL', 'normal')", "unknown value 'normal' for 'regime' (expected one of EXTREME, FROZEN, NORMAL)", 21),
    ("regime in ('NORMAL', 2)", "cannot test string field 'regime' against number 2", 21),
    ("atr in ()", "empty 'in' list", 8),
    ("atr in 1", "expected '(' after 'in', got '1'", 7),
    ("atr in (1 2)", "expected ',' or ')', got '2'", 10),
    ("atr in (1, rho)", "only literals are allowed in an 'in' list", 11),
    ("rv_60 between 0.5 and 0.1", "empty range: 0.5 > 0.1", 6),
    ("rv_60 between 0.1 or 0.5", "expected 'and' in 'between', got 'or'", 18),
    ("regime between 1 and 2", "'between' needs numbers, got string field 'regime'", 7),
    ("(atr > 1) > 2", "a parenthesized condition cannot be compared", 10),
    ("x" * 5000, "expression longer than 4096 characters", 4096),
]


@pytest.mark.parametrize(("when", "message", "pos"), BAD_EXPRESSIONS)
def test_rejected_expressions(when, message, pos):
    with pytest.raises(RuleError) as info:
        compile_rules([{"id": "bad_rule", "when": when, "then": {"skip_entry": True}}])
    err = info.value
    assert (err.message, err.pos, err.rule_id) == (message, pos, "bad_rule")
    text = str(err)
    assert text.startswith("rule 'bad_rule': " + message)
    if pos is not None:
        assert f" at {pos} (line {err.line}, col {err.col})" in text


def test_line_and_column():
    with pytest.raises(RuleError) as info:
        one("atr > 1 and\n  rho > 0 and\n\tfoo > 1")
    assert (info.value.pos, info.value.line, info.value.col) == (27, 3, 2)


def test_deep_nesting_never_hits_python_recursion():
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        for when in ("(" * 2000 + "atr>1" + ")" * 2000, "not " * 1000 + "atr>1",
                     " and ".join(["atr>1"] * 600)):
            try:
                compile_rules([{"id": "d", "when": when, "then": {"skip_entry": True}}])
            except RuleError as e:
                assert "nesting" in e.message or "longer" in e.message
    finally:
        sys.setrecursionlimit(limit)
    # long flat chains are fine (no recursion per operand)
    flat = " and ".join(["atr > 1"] * 300)
    assert one(flat).fired == ("r",)


# (rule, message)
BAD_RULES = [
    ({"id": "r", "when": "true", "then": {"x": 1}}, "unknown action 'x'"),
    ({"id": "r", "when": "true", "then": {"size_mult": 50}}, "size_mult 50 outside [0, 5]"),
    ({"id": "r", "when": "true", "then": {"size_mult": -0.1}}, "size_mult -0.1 outside [0, 5]"),
    ({"id": "r", "when": "true", "then": {"tp_mult": 0.05}}, "tp_mult 0.05 outside [0.1, 10]"),
    ({"id": "r", "when": "true", "then": {"sl_mult": 11}}, "sl_mult 11 outside [0.1, 10]"),
    ({"id": "r", "when": "true", "then": {"sl_mult": float("nan")}}, "sl_mult must be a finite number"),
    ({"id": "r", "when": "true", "then": {"size_mult": "1.2"}}, "size_mult must be a finite number"),
    ({"id": "r", "when": "true", "then": {"size_mult": True}}, "size_mult must be a finite number"),
    ({"id": "r", "when": "true", "then": {"max_adds_override": 11}}, "max_adds_override 11 outside [0, 10]"),
    ({"id": "r", "when": "true", "then": {"max_adds_override": 2.5}}, "max_adds_override must be an integer"),
    ({"id": "r", "when": "true", "then": {"skip_entry": 1}}, "skip_entry must be true or false"),
    ({"id": "r", "when": "true", "then": {}}, "'then' must be a non-empty mapping of actions"),
    ({"id": "r", "when": "true"}, "'then' must be a non-empty mapping of actions"),
    ({"id": "r", "when": 5, "then": {"skip_entry": True}}, "'when' must be a non-empty string"),
    ({"id": "r", "when": "true", "then": {"skip_entry": True}, "prio": 1}, "unknown rule key 'prio'"),
    ({"id": "r", "when": "true", "then": {"skip_entry": True}, "priority": 1.5},
     "'priority' must be an integer within ±1000000"),
    ({"id": "r", "when": "true", "then": {"skip_entry": True}, "stop": "yes"}, "'stop' must be true or false"),
    ({"id": "r", "enabled": False, "when": "nope > 1", "then": {"skip_entry": True}}, "unknown field 'nope'"),
]


@pytest.mark.parametrize(("rule", "message"), BAD_RULES)
def test_rejected_rules(rule, message):
    with pytest.raises(RuleError) as info:
        compile_rules([rule])
    assert info.value.message == message and info.value.rule_id == "r"


def test_rejected_bundles():
    ok = {"when": "true", "then": {"skip_entry": True}}
    with pytest.raises(RuleError, match="duplicate rule id"):
        compile_rules([{"id": "a", **ok}, {"id": "a", **ok}])
    with pytest.raises(RuleError, match="'id' must match"):
        compile_rules([{"id": "bad id!", **ok}])
    with pytest.raises(RuleError, match="rule #0 is not a mapping"):
        compile_rules(["atr > 1"])
    with pytest.raises(RuleError, match="rules must be a list"):
        compile_rules("atr > 1")
    with pytest.raises(RuleError, match="more than 256 rules"):
        compile_rules([{"id": f"r{i}", **ok} for i in range(257)])


@pytest.mark.parametrize("iso", ["2025-07-06T00:00:00", "2025-07-13T10:37:59", "1970-01-01T23:00:00",
                                 "2024-02-29T12:30:00"])
def test_time_fields(iso):
    dt = datetime.fromisoformat(iso).replace(tzinfo=UTC)
    got = time_fields(int(dt.timestamp() * 1000))
    assert got == {"hour_utc": dt.hour, "weekday": dt.weekday()}


def test_modules_are_pure_and_never_eval():
    import ast
    import importlib

    forbidden_calls = {"eval", "exec", "compile", "__import__", "literal_eval", "open"}
    forbidden_imports = {"ast", "os", "time", "datetime", "socket", "redis", "subprocess", "importlib"}
    for mod in ("chimera.handlers.strategy.dsl", "chimera.handlers.strategy.dsl_expr",
                "chimera.handlers.strategy.dsl_lex", "chimera.handlers.features.indicators",
                "chimera.handlers.features.engine", "chimera.schemas.states"):
        tree = ast.parse(Path(importlib.import_module(mod).__file__).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                fn = node.func
                if isinstance(fn, ast.Name):
                    assert fn.id not in forbidden_calls, (mod, fn.id)
                elif isinstance(fn, ast.Attribute):  # re.compile is fine, ast.literal_eval is not
                    assert fn.attr not in {"eval", "exec", "literal_eval"}, (mod, fn.attr)
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                assert not {n.split(".")[0] for n in names} & forbidden_imports, (mod, names)
