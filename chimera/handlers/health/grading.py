"""The health grade: each signal against its thresholds, the system grade is the worst of them.

Pure (no I/O): ``grade(signals, thresholds)`` is unit-testable and the same in both runtimes.

Signals (``None`` = not measured yet or not enough samples: not graded, never guessed):

=====================  =====================================================  ==========================
signal                 meaning                                                default YELLOW/ORANGE/RED
=====================  =====================================================  ==========================
maker_fill_ratio       S4 maker legs filled / maker legs rested (lower worse)  < 0.60 / < 0.40 / < 0.20
reject_rate            S4 maker legs rejected / sent (higher worse)            > 0.02 / > 0.05 / > 0.10
router_p95_ms          S4 command -> venue ack p95                             > 250 / > 500 / > 1000
stream_lag             worst consumer-group backlog on the core streams        > 100 / > 1000 / > 10000
ws_lag_ms              S1 WebSocket round trip, worst of the last minute       > 1000 / > 3000 / > 10000
reconcile_inconsistent 1 while S5 holds trading in REDUCE_ONLY                 - / >= 1 / -
drawdown_pct           today's realized loss / ``health.equity_usdt``          > 0.02 / > 0.05 / > 0.08
model_auc              model gate AUC from the labels (lower worse)            < 0.55 / < 0.52 / < 0.50
model_brier            model gate Brier score (higher worse)                   > 0.25 / > 0.27 / > 0.30
=====================  =====================================================  ==========================

Overrides come from the active bundle's ``health.thresholds`` section, e.g.
``{"health": {"thresholds": {"router_p95_ms": {"yellow": 300, "orange": 600, "red": 1200}}}}``;
a level left out of an override is not graded for that signal.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from chimera.errors import PermanentError

LEVELS = ("GREEN", "YELLOW", "ORANGE", "RED")
RANK = {name: i for i, name in enumerate(LEVELS)}

# signal -> (higher_is_worse, {level: threshold})
DEFAULTS: dict[str, tuple[bool, dict[str, float]]] = {
    "maker_fill_ratio": (False, {"YELLOW": 0.60, "ORANGE": 0.40, "RED": 0.20}),
    "reject_rate": (True, {"YELLOW": 0.02, "ORANGE": 0.05, "RED": 0.10}),
    "router_p95_ms": (True, {"YELLOW": 250, "ORANGE": 500, "RED": 1000}),
    "stream_lag": (True, {"YELLOW": 100, "ORANGE": 1000, "RED": 10_000}),
    "ws_lag_ms": (True, {"YELLOW": 1000, "ORANGE": 3000, "RED": 10_000}),
    "reconcile_inconsistent": (True, {"ORANGE": 0.5}),
    "drawdown_pct": (True, {"YELLOW": 0.02, "ORANGE": 0.05, "RED": 0.08}),
    "model_auc": (False, {"YELLOW": 0.55, "ORANGE": 0.52, "RED": 0.50}),
    "model_brier": (True, {"YELLOW": 0.25, "ORANGE": 0.27, "RED": 0.30}),
}


@dataclass(frozen=True)
class Verdict:
    level: str
    reasons: dict[str, str]  # signal -> "value vs threshold" for every signal above GREEN


def thresholds(section: Mapping | None) -> dict[str, tuple[bool, dict[str, float]]]:
    """DEFAULTS overlaid with the bundle's ``health.thresholds``; a bad value names the key."""
    out = {k: (worse, dict(levels)) for k, (worse, levels) in DEFAULTS.items()}
    for signal, levels in dict(section or {}).items():
        if signal not in out:
            raise PermanentError(f"bundle health.thresholds.{signal}: unknown signal (known: {', '.join(DEFAULTS)})")
        if not isinstance(levels, Mapping):
            raise PermanentError(f"bundle health.thresholds.{signal}: expected {{yellow|orange|red: number}}")
        parsed: dict[str, float] = {}
        for name, value in levels.items():
            level = str(name).upper()
            if level not in RANK or level == "GREEN":
                raise PermanentError(f"bundle health.thresholds.{signal}.{name}: level must be yellow, orange or red")
            try:
                parsed[level] = float(value)
            except (TypeError, ValueError):
                raise PermanentError(f"bundle health.thresholds.{signal}.{name}={value!r}: expected a number") from None
        out[signal] = (out[signal][0], parsed)
    return out


def grade_one(value: float, higher_is_worse: bool, levels: Mapping[str, float]) -> str:
    worst = "GREEN"
    for level, limit in levels.items():
        breached = value > limit if higher_is_worse else value < limit
        if breached and RANK[level] > RANK[worst]:
            worst = level
    return worst


def grade(signals: Mapping[str, float | None], table: Mapping[str, tuple[bool, Mapping[str, float]]]) -> Verdict:
    worst, reasons = "GREEN", {}
    for name, value in signals.items():
        if value is None or name not in table:
            continue
        higher, levels = table[name]
        level = grade_one(float(value), higher, levels)
        if level != "GREEN":
            limit = levels[level]
            reasons[name] = f"{value:.6g} {'>' if higher else '<'} {limit:g} ({level})"
            if RANK[level] > RANK[worst]:
                worst = level
    return Verdict(worst, reasons)
