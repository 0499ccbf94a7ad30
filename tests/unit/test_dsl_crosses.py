"""``crosses_above`` / ``crosses_below`` in the rules DSL, and S3 entering on a crossing."""

from __future__ import annotations

import copy
from types import MappingProxyType

import pytest

from chimera.errors import PermanentError
from chimera.handlers.strategy.bundle import parse, rule_fields
from chimera.handlers.strategy.dsl import compile_rules
from chimera.handlers.strategy.dsl_expr import PREV
from chimera.handlers.strategy.dsl_lex import RuleError
from chimera.handlers.strategy.engine import Signal, decide
from chimera.workers.config import ActiveConfig
from tests.unit.test_strategy_engine import BUNDLE, FEATS, T0, make_ctx

FIELDS = rule_fields({"sma_windows": [20, 60]})


def fires(when: str, now: dict, prev: dict | None) -> tuple[bool, tuple[str, ...]]:
    rs = compile_rules([{"id": "r", "when": when, "then": {"size_mult": 1}}], FIELDS)
    ctx = dict(now) if prev is None else {**now, PREV: prev}
    out = rs.evaluate(ctx)
    return bool(out.fired), out.missing


@pytest.mark.parametrize(("prev", "now", "above", "below"), [
    ((1.0, 2.0), (3.0, 2.0), True, False),   # from below to above
    ((3.0, 2.0), (1.0, 2.0), False, True),   # from above to below
    ((1.0, 2.0), (1.5, 2.0), False, False),  # still below
    ((3.0, 2.0), (4.0, 2.0), False, False),  # still above
    ((2.0, 2.0), (3.0, 2.0), False, False),  # touching before is not below (backtesting.py's crossover)
    ((1.0, 2.0), (2.0, 2.0), False, False),  # touching now is not above
])
def test_crossing_truth_table(prev, now, above, below):
    p = {"sma_20": prev[0], "sma_60": prev[1]}
    n = {"sma_20": now[0], "sma_60": now[1]}
    assert fires("sma_20 crosses_above sma_60", n, p)[0] is above
    assert fires("sma_20 crosses_below sma_60", n, p)[0] is below
    assert fires("sma_60 crosses_below sma_20", n, p)[0] is above  # the mirror


def test_a_literal_is_the_same_on_both_bars_and_combines_with_other_conditions():
    assert fires("rho crosses_above 0.5", {"rho": 0.6}, {"rho": 0.4}) == (True, ())
    assert fires("-0.5 crosses_below rho", {"rho": -0.4}, {"rho": -0.6}) == (True, ())
    assert fires("sma_20 crosses_above sma_60 and rv_15 > 0.001",
                 {"sma_20": 3, "sma_60": 2, "rv_15": 0.002}, {"sma_20": 1, "sma_60": 2}) == (True, ())
    assert fires("not (sma_20 crosses_above sma_60)", {"sma_20": 3, "sma_60": 2}, {"sma_20": 1, "sma_60": 2})[0] is False


def test_missing_values_at_either_bar_never_cross_and_are_reported():
    assert fires("sma_20 crosses_above sma_60", {"sma_20": 3, "sma_60": 2}, None) == (
        False, ("prev.sma_20", "prev.sma_60"))
    assert fires("sma_20 crosses_above sma_60", {"sma_20": 3, "sma_60": None}, {"sma_20": 1, "sma_60": 2}) == (
        False, ("sma_60",))
    assert fires("sma_20 crosses_above sma_60", {"sma_20": 3, "sma_60": 2}, {"sma_20": float("nan"), "sma_60": 2}) == (
        False, ("prev.sma_20",))


@pytest.mark.parametrize(("when", "message"), [
    ("regime crosses_above 'NORMAL'", "needs numbers"),
    ("1 crosses_above 2", "two literals never holds"),
    ("sma_20 crosses_above sma_60 crosses_above rho", "cannot be chained"),
    ("sma_20 crosses_above sma_60 > 1", "cannot be chained"),
    ("sma_20 crosses_above", "expected a field or a literal"),
    ("sma_30 crosses_above sma_60", "unknown field 'sma_30'"),
    ("crosses_above(sma_20, sma_60)", "expected a field or a literal"),
])
def test_bad_crossings_fail_at_compile_time_with_the_reason(when, message):
    with pytest.raises(RuleError, match=message):
        compile_rules([{"id": "r", "when": when, "then": {"size_mult": 1}}], FIELDS)


def test_sma_fields_exist_only_when_the_bundle_asks_s2_for_them():
    strategy = {**copy.deepcopy(BUNDLE["strategy"]), "entry": {"long_when": "sma_20 crosses_above sma_60"}}
    assert parse(strategy, features={"sma_windows": [20, 60]}).long_when is not None
    with pytest.raises(PermanentError, match="unknown field 'sma_20'"):
        parse(strategy)
    for bad in ("20", [1], [20, 10_001], [True]):
        with pytest.raises(PermanentError, match="sma_windows must be a list of integers in"):
            parse(strategy, features={"sma_windows": bad})


def _sma_ctx(rev: int):
    ctx = make_ctx(entry={"long_when": "sma_20 crosses_above sma_60"})
    ctx.config = ActiveConfig("sma-cross", rev, MappingProxyType({**ctx.config.bundle,
                                                                   "features": {"sma_windows": [20, 60]}}))
    return ctx


def test_s3_opens_on_the_crossing_bar_only():
    feats = {**FEATS, "sma_20": 101.0, "sma_60": 100.0}
    crossed = decide(Signal("x1", "BTCUSDT", T0, dict(feats), prev={"sma_20": 99.0, "sma_60": 100.0}), _sma_ctx(1))
    assert crossed[0].payload.action == "open" and crossed[0].payload.side == "BUY"
    stayed = decide(Signal("x2", "BTCUSDT", T0, dict(feats), prev={"sma_20": 100.5, "sma_60": 100.0}), _sma_ctx(2))
    assert stayed[0].payload.action == "skip" and stayed[0].payload.reason == "NO_SIGNAL"
    unknown = decide(Signal("x3", "BTCUSDT", T0, dict(feats)), _sma_ctx(3))  # no previous bar: no crossing
    assert unknown[0].payload.reason == "NO_SIGNAL"
