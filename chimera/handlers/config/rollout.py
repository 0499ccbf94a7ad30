"""The staged rollout of a bundle as a transition table, its guardrails and its analysis verdicts.

SHADOW (the candidate decides beside the active bundle over the same signals; its decisions are
recorded, never executed) → CANARY (the candidate live at a small share of its size) → RAMP_10 →
RAMP_50 → RAMP_100 (share of size) → PROMOTED. Every stage ends with an analysis: Successful moves
on, Failed rolls back to the previous rev at once, Inconclusive (missing data, NaN) pauses; a
paused rollout never promotes by itself, an operator resumes or aborts it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

STAGES = ("SHADOW", "CANARY", "RAMP_10", "RAMP_50", "RAMP_100")
SIZE_PCT = {"CANARY": None, "RAMP_10": 10, "RAMP_50": 50, "RAMP_100": 100}  # CANARY: governance canary_size_pct
TERMINAL = frozenset({"PROMOTED", "ROLLED_BACK", "REJECTED"})
LIVE = frozenset(STAGES) | {"PENDING", "PAUSED"}

SUCCESSFUL, FAILED, INCONCLUSIVE = "Successful", "Failed", "Inconclusive"
RESUMED = "<paused stage>"  # RESUME returns to the stage the rollout paused in

# (state, event) -> next state. Anything not listed is refused (the command or timer is stale).
TRANSITIONS: dict[tuple[str, str], str] = {
    ("PENDING", "GUARDS_PASSED"): "SHADOW",
    ("PENDING", "GUARDS_FAILED"): "REJECTED",
    **{(a, SUCCESSFUL): b for a, b in zip(STAGES, (*STAGES[1:], "PROMOTED"), strict=True)},
    **{(s, FAILED): "ROLLED_BACK" for s in STAGES},
    **{(s, INCONCLUSIVE): "PAUSED" for s in STAGES},
    **{(s, "ABORT"): "ROLLED_BACK" for s in (*STAGES, "PAUSED")},
    ("PAUSED", "RESUME"): RESUMED,
}


def next_state(state: str, event: str, paused_state: str = "") -> str | None:
    to = TRANSITIONS.get((state, event))
    return paused_state or None if to == RESUMED else to


@dataclass(frozen=True)
class Governance:
    """``governance`` section of the active bundle (the incumbent sets the bar its successor must pass)."""

    max_delta_trades_pct: float = 0.5  # |Δ trades| / max(1, active opens) in the dry-run
    max_override_rate: float = 0.8  # share of sided decisions in which a rule fired
    min_robustness: float = 0.5  # 1 - the largest flip_pct of the sensitivity run
    require_simulation: bool = True
    analysis_interval_ms: int = 3_600_000
    canary_size_pct: float = 5.0
    canary_symbols: tuple[str, ...] = ()
    skip_shadow: bool = False
    min_signals: int = 1  # shadow: signals needed for a verdict
    min_orders: int = 1  # live stages: orders of the stage rev needed for a verdict
    # A stage short of samples (orders, or signals in SHADOW) has no verdict yet: it runs another
    # analysis interval, this many times, before pausing as Inconclusive. A quiet hour, or workers that
    # took a moment to hot-reload the stage rev, is not a reason to call an operator.
    max_extensions: int = 3
    max_reject_rate: float = 0.2
    min_maker_fill_ratio: float = 0.2  # only judged when the stage rested maker legs
    max_slippage_bps: float = 10.0
    max_drawdown_excess_pct: float = 2.0  # stage drawdown minus the incumbent's, in % of equity
    equity_usdt: float = 1000.0
    thresholds: dict = field(default_factory=dict)

    @classmethod
    def from_bundle(cls, body: Mapping[str, Any] | None) -> Governance:
        g = dict((body or {}).get("governance") or {})
        g.update(g.pop("rollout", {}) or {})
        known = {k: v for k, v in g.items() if k in cls.__dataclass_fields__ and k != "thresholds"}
        if "canary_symbols" in known:
            known["canary_symbols"] = tuple(known["canary_symbols"])
        return cls(**known)


def guardrails(gov: Governance, dry_run: Mapping | None, robustness: float | None) -> tuple[bool, list[str], dict]:
    """The promote gate over the candidate's stored dry-run and simulation; reasons name each breach."""
    reasons: list[str] = []
    figures: dict[str, Any] = {}
    if not dry_run:
        reasons.append("no dry-run stored for the candidate (create it with chimera bundles create)")
    else:
        base = max(1, int(dry_run.get("opens_active", 0)))
        delta = abs(int(dry_run.get("delta_trades", 0))) / base
        rate = float(dry_run.get("override_rate_candidate", 0.0))
        figures.update(delta_trades_pct=round(delta, 6), override_rate=rate)
        if delta > gov.max_delta_trades_pct:
            reasons.append(f"delta_trades {delta:.2%} of the active opens > {gov.max_delta_trades_pct:.2%}")
        if rate > gov.max_override_rate:
            reasons.append(f"rule override rate {rate:.2%} > {gov.max_override_rate:.2%}")
    figures["robustness"] = robustness
    if robustness is None:
        if gov.require_simulation:
            reasons.append("no simulation stored for the candidate (run chimera bundles simulate)")
    elif not robustness >= gov.min_robustness:  # NaN fails too
        reasons.append(f"robustness {robustness:.3f} < {gov.min_robustness:.3f}")
    return not reasons, reasons, figures


def _bad(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def short_of_samples(gov: Governance, state: str, m: Mapping) -> bool:
    """The stage's figures rest on too few samples for any verdict (a NaN figure with enough is not this)."""
    if state == "SHADOW":
        return int(m.get("signals", 0)) < gov.min_signals
    return _bad(m.get("orders")) or m["orders"] < gov.min_orders


def analyze_shadow(gov: Governance, d: Mapping) -> tuple[str, list[str]]:
    """Shadow verdict from the decision diff over the signals seen since the stage started."""
    if int(d.get("signals", 0)) < gov.min_signals:
        return INCONCLUSIVE, [f"{d.get('signals', 0)} signals since the stage started < min_signals {gov.min_signals}"]
    ok, reasons, _ = guardrails(gov, d, robustness=1.0)
    return (SUCCESSFUL, []) if ok else (FAILED, reasons)


def analyze_live(gov: Governance, m: Mapping) -> tuple[str, list[str]]:
    """Live verdict: a breach of any figure that has samples fails (rolling back is the safe side);
    otherwise too few orders or any missing/NaN figure is inconclusive; only a full set of good
    figures is successful, so NaN never promotes."""
    if _bad(m.get("orders")) or m["orders"] < gov.min_orders:
        return INCONCLUSIVE, [f"orders of the stage rev {m.get('orders')} < min_orders {gov.min_orders}"]
    needed = ["reject_rate", "slippage_bps", "drawdown_pct", "incumbent_drawdown_pct"]
    if m.get("maker_sent"):
        needed.append("maker_fill_ratio")
    have = {k: m[k] for k in needed if not _bad(m.get(k))}
    reasons = []
    if "reject_rate" in have and have["reject_rate"] > gov.max_reject_rate:
        reasons.append(f"reject_rate {have['reject_rate']:.3f} > {gov.max_reject_rate}")
    if "maker_fill_ratio" in have and have["maker_fill_ratio"] < gov.min_maker_fill_ratio:
        reasons.append(f"maker_fill_ratio {have['maker_fill_ratio']:.3f} < {gov.min_maker_fill_ratio}")
    if "slippage_bps" in have and have["slippage_bps"] > gov.max_slippage_bps:
        reasons.append(f"slippage {have['slippage_bps']:.2f} bps > {gov.max_slippage_bps}")
    if "drawdown_pct" in have and "incumbent_drawdown_pct" in have:
        excess = have["drawdown_pct"] - have["incumbent_drawdown_pct"]
        if excess > gov.max_drawdown_excess_pct:
            reasons.append(f"drawdown {have['drawdown_pct']:.2f}% exceeds the incumbent's by {excess:.2f} points")
    if reasons:
        return FAILED, reasons
    missing = [k for k in needed if k not in have]
    if missing:
        return INCONCLUSIVE, [f"{k} is missing or NaN" for k in missing]
    return SUCCESSFUL, []


def stage_body(candidate: Mapping[str, Any], stage: str, gov: Governance, promotion_id: str) -> dict:
    """The bundle a live stage runs: the candidate at the stage's share of its size (and canary symbols)."""
    pct = gov.canary_size_pct if stage == "CANARY" else SIZE_PCT[stage]
    body = {**candidate, "strategy": dict(candidate.get("strategy") or {})}
    strat = body["strategy"]
    sizing = dict(strat.get("sizing") or {})
    sizing["margin_usdt"] = f"{(Decimal(str(sizing.get('margin_usdt', '20'))) * Decimal(str(pct)) / 100).normalize():f}"
    strat["sizing"] = sizing
    if stage == "CANARY" and gov.canary_symbols:
        strat["symbols"] = list(gov.canary_symbols)
    body["rollout"] = {"promotion_id": promotion_id, "stage": stage, "size_pct": pct}
    return body
