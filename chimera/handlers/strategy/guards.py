"""L0 guards that need no I/O: given the shared state already read, name what blocks an entry.

Each returns a reason string (recorded as ``decision.reason``) or None to let the entry pass.
"""

from __future__ import annotations

from chimera.handlers.strategy.bundle import StrategyConfig
from chimera.schemas.strategy import KillSwitchState


def kill_switch(ks: KillSwitchState | None) -> str | None:
    # Every mode forbids new entries; they differ in what S4/S6 do with existing exposure.
    return f"KILL_SWITCH_{ks.mode}" if ks else None


def trading_window(cfg: StrategyConfig, as_of_ms: int) -> str | None:
    if not cfg.windows:
        return None
    days, rem = divmod(as_of_ms, 86_400_000)
    weekday, minute = (days + 3) % 7, rem // 60_000  # 1970-01-01 was a Thursday
    for w in cfg.windows:
        if weekday in w.days and w.start_min <= minute < w.end_min:
            return None
    return "TRADING_WINDOW"


def health(cfg: StrategyConfig, level: str | None) -> tuple[str | None, float, str]:
    """(reason, size multiplier, effective level). RED blocks; unknown levels block too."""
    level = (level or cfg.health_missing).upper()
    if level == "RED":
        return "HEALTH_RED", 0.0, level
    mult = cfg.health_mult.get(level)
    if mult is None:
        return f"HEALTH_UNKNOWN_{level}", 0.0, level
    if mult <= 0:
        return f"HEALTH_{level}", 0.0, level
    return None, mult, level


def regime(cfg: StrategyConfig, state: str | None) -> str | None:
    return f"REGIME_{state}" if state and state.upper() in cfg.regime_block else None


def funding_window(cfg: StrategyConfig, features: dict) -> str | None:
    # Missing minutes_to_funding (no markPrice stream yet) does not block: documented choice.
    if cfg.funding_no_entry_min is None:
        return None
    mins = features.get("minutes_to_funding")
    if isinstance(mins, int | float) and 0 <= mins < cfg.funding_no_entry_min:
        return "FUNDING_WINDOW"
    return None


def cooldown(cfg: StrategyConfig, last_sl_ms: int | None, as_of_ms: int) -> str | None:
    if cfg.cooldown_bars <= 0 or last_sl_ms is None:
        return None
    return "COOLDOWN_AFTER_SL" if 0 <= as_of_ms - last_sl_ms < cfg.cooldown_bars * cfg.bar_ms else None


def breaker(level: str) -> str | None:
    """The account's daily drawdown breaker (``chimera/risk/breaker.py``): SOFT and HARD refuse entries."""
    return f"BREAKER_{level}" if level in ("SOFT", "HARD") else None


def max_open_account(open_now: int, limit: int | None) -> str | None:
    """At most ``limit`` live positions per account (S6's positions, adopted ones included)."""
    return "MAX_OPEN_POSITIONS_ACCOUNT" if limit is not None and open_now >= limit else None


def priority_replace(new_priority: float, old_priority: float) -> bool:
    """Only a strictly higher-priority entry may close an older same-direction position (trading-ci)."""
    return new_priority > old_priority
