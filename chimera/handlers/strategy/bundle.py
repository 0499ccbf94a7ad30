"""The ``strategy`` section of the active bundle, validated and compiled once per config rev.

Config bundles are immutable per (bundle_id, rev), so the compiled form is cached by that pair
and a hot reload simply misses the cache once. Defaults follow the spec's preferences: PERP,
20x isolated, 20 USDT margin per entry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from chimera.errors import PermanentError
from chimera.handlers.features.engine import MAX_SMA_WINDOW
from chimera.handlers.strategy.dsl import DEFAULT_FIELDS, CompiledRuleSet, compile_rules
from chimera.handlers.strategy.dsl_expr import Field
from chimera.handlers.strategy.dsl_lex import RuleError
from chimera.risk.state import Limits

_FUT_POLICIES = ("MakerThenTaker", "TWAP", "MARKET")
_SPOT_POLICIES = ("OCO", "GUARD")


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # Monday = 0
    start_min: int  # minutes after 00:00 UTC, inclusive
    end_min: int  # exclusive; 1440 = end of day


@dataclass(frozen=True)
class ModelSpec:
    key: str
    features: tuple[str, ...]
    timeout_ms: int
    curve: tuple[tuple[float, float], ...]
    on_timeout: str  # "reduce" | "skip"
    fallback_size_mult: float


@dataclass(frozen=True)
class Sizing:
    market: str = "FUT"
    leverage: int = 20
    margin_type: str = "ISOLATED"
    margin_usdt: Decimal = Decimal("20")
    exec_policy: str = "MakerThenTaker"
    tp_atr: float = 3.0
    sl_atr: float = 1.5


@dataclass(frozen=True)
class StrategyConfig:
    bundle_id: str
    rev: int
    symbols: frozenset[str] | None
    long_when: CompiledRuleSet | None
    short_when: CompiledRuleSet | None
    rules: CompiledRuleSet
    windows: tuple[Window, ...]
    health_mult: Mapping[str, float]
    health_missing: str
    regime_block: frozenset[str]
    funding_no_entry_min: float | None
    limits: Limits
    cooldown_bars: int
    bar_ms: int
    priority_replace: bool
    stack_same_direction: bool  # several positions may hold one symbol and side (each its own stop)
    sizing: Sizing
    model: ModelSpec | None
    raw: Mapping[str, Any] = field(repr=False, default_factory=dict)


# (bundle_id, rev) -> (the bundle it was compiled from, the compiled strategy). A bundle id and rev name
# one content in production, but backtests, simulations and experiments compile edited copies under the
# same id and rev in one process: the content is checked (identity first, equality when the object
# differs), so an edited copy is never served the original's rules.
_CACHE: dict[tuple[str, int], tuple[Any, StrategyConfig | None]] = {}
_CACHE_LOCK = threading.Lock()


DEFAULT_BUDGET_USDT = "200"  # risk.fut_margin_budget_usdt when the bundle sets none (S6 adds use it too)


def strategy_config(config) -> StrategyConfig | None:
    """The compiled strategy for an ActiveConfig, or None when the bundle has no strategy."""
    key = (config.bundle_id, config.rev)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None and (hit[0] is config.bundle or hit[0] == config.bundle):
        return hit[1]
    raw = config.get("strategy")
    compiled = None if raw is None else parse(raw, config.bundle_id, config.rev, features=config.get("features"))
    with _CACHE_LOCK:
        if len(_CACHE) > 64:  # old revs are never asked for again once the fleet moved on
            _CACHE.clear()
        _CACHE[key] = (config.bundle, compiled)
    return compiled


def parse(raw: Mapping[str, Any], bundle_id: str = "", rev: int = 0,
          features: Mapping[str, Any] | None = None) -> StrategyConfig:
    """``features``: the bundle's S2 section; its ``sma_windows`` add the ``sma_<n>`` fields rules may read."""
    try:
        return _parse(raw, bundle_id, rev, rule_fields(features))
    except (RuleError, ValueError, TypeError, KeyError, InvalidOperation) as exc:
        raise PermanentError(f"strategy bundle {bundle_id}:{rev} is invalid: {exc}") from exc


def rule_fields(features: Mapping[str, Any] | None) -> Mapping[str, Field]:
    """The fields rules may read: S2's defaults plus the moving averages the bundle asks S2 for."""
    windows = (features or {}).get("sma_windows") or ()
    if isinstance(windows, str | bytes) or not all(isinstance(w, int) and not isinstance(w, bool)
                                                   and 2 <= w <= MAX_SMA_WINDOW for w in windows):
        raise ValueError(f"features.sma_windows must be a list of integers in [2, {MAX_SMA_WINDOW}], got {windows!r}")
    return {**DEFAULT_FIELDS, **{f"sma_{w}": Field("number") for w in windows}}


def _side_rule(expr: str | None, name: str, fields: Mapping[str, Field]) -> CompiledRuleSet | None:
    if not expr:
        return None
    return compile_rules([{"id": name, "when": expr, "then": {"size_mult": 1.0}}], fields=fields)


def _hhmm(text: str) -> int:
    h, m = (int(x) for x in str(text).split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60 and h * 60 + m <= 1440):
        raise ValueError(f"bad time {text!r}")
    return h * 60 + m


def _parse(raw: Mapping[str, Any], bundle_id: str, rev: int, fields: Mapping[str, Field]) -> StrategyConfig:
    entry = raw.get("entry", {})
    risk = raw.get("risk", {})
    prot = raw.get("protections", {})
    health = raw.get("health", {})
    sz = raw.get("sizing", {})
    sizing = Sizing(
        market=sz.get("market", "FUT"), leverage=int(sz.get("leverage", 20)),
        margin_type=sz.get("margin_type", "ISOLATED"), margin_usdt=Decimal(str(sz.get("margin_usdt", "20"))),
        exec_policy=sz.get("exec_policy", "MakerThenTaker" if sz.get("market", "FUT") == "FUT" else "OCO"),
        tp_atr=float(sz.get("tp_atr", 3.0)), sl_atr=float(sz.get("sl_atr", 1.5)),
    )
    allowed = _FUT_POLICIES if sizing.market == "FUT" else _SPOT_POLICIES
    if sizing.market not in ("FUT", "SPOT") or sizing.exec_policy not in allowed:
        raise ValueError(f"sizing: market {sizing.market} with exec_policy {sizing.exec_policy}; allowed {allowed}")
    if sizing.margin_usdt <= 0 or not 1 <= sizing.leverage <= 125:
        raise ValueError("sizing: margin_usdt must be > 0 and leverage in [1, 125]")
    windows = tuple(
        Window(frozenset(int(d) for d in w.get("days", range(7))), _hhmm(w.get("start", "00:00")),
               _hhmm(w.get("end", "24:00")))
        for w in raw.get("trading_windows", ())
    )
    symbols = raw.get("symbols")
    funding = raw.get("funding", {}).get("no_entry_minutes_before")
    return StrategyConfig(
        bundle_id=bundle_id, rev=rev,
        symbols=frozenset(symbols) if symbols else None,
        long_when=_side_rule(entry.get("long_when"), "long_when", fields),
        short_when=_side_rule(entry.get("short_when"), "short_when", fields),
        rules=compile_rules(raw.get("rules", []), fields=fields),
        windows=windows,
        health_mult={k.upper(): float(v) for k, v in
                     health.get("size_mult", {"GREEN": 1.0, "YELLOW": 0.75, "ORANGE": 0.5}).items()},
        health_missing=str(health.get("when_missing", "GREEN")).upper(),
        regime_block=frozenset(s.upper() for s in raw.get("regime", {}).get("block", ["FROZEN"])),
        funding_no_entry_min=None if funding is None else float(funding),
        limits=Limits(Decimal(str(risk.get("fut_margin_budget_usdt", DEFAULT_BUDGET_USDT))), int(risk.get("max_per_symbol", 1)),
                      int(risk.get("max_open_positions", 5))),
        cooldown_bars=int(prot.get("cooldown_bars_after_sl", 0)),
        bar_ms=int(prot.get("bar_ms", 60_000)),
        priority_replace=bool(prot.get("priority_replace", False)),
        stack_same_direction=bool(prot.get("stack_same_direction", False)),
        sizing=sizing,
        model=_model(raw.get("model")),
        raw=raw,
    )


def _model(m: Mapping[str, Any] | None) -> ModelSpec | None:
    if not m:
        return None
    curve = tuple(sorted((float(p), float(v)) for p, v in m.get("curve", [[0.0, 1.0], [1.0, 1.0]])))
    if not curve or any(not 0 <= p <= 1 or not 0 <= v <= 5 for p, v in curve):
        raise ValueError("model.curve: points [p in [0,1], size_mult in [0,5]]")
    on_timeout = m.get("on_timeout", "reduce")
    if on_timeout not in ("reduce", "skip"):
        raise ValueError("model.on_timeout must be 'reduce' or 'skip'")
    return ModelSpec(key=str(m["key"]), features=tuple(m["features"]), timeout_ms=int(m.get("timeout_ms", 50)),
                     curve=curve, on_timeout=on_timeout,
                     fallback_size_mult=float(m.get("fallback_size_mult", 0.5)))
