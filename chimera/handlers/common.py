"""Small pieces every execution-side handler (S4, S5, S6) needs, written once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chimera.workers.handler import Context

EVENTS = "strategy_events"


def dec(x: Any) -> Decimal | None:
    """A stored money/quantity field (a string, or empty/None for "not set") as a Decimal."""
    return None if x is None or x == "" else Decimal(str(x))


def venue(ctx: Context, account_id: str = "main"):
    """The account's venue client (``ctx.venues``: built once per worker)."""
    return ctx.venues.get(account_id)


def kill_mode(ctx: Context) -> str | None:
    """The kill switch's mode (HALT_NEW, REDUCE_ONLY, FLATTEN) or None when it is off."""
    state = ctx.risk.kill_switch()
    return state.mode if state else None


def strategy_event(ctx: Context, kind: str, key: str, body: dict) -> None:
    """``strategy_events/<kind>:<key>``: an upsert, so a redelivery writes the same document."""
    ctx.store.upsert(EVENTS, f"{kind}:{key}", {"kind": kind, "ts": ctx.now_ms(), **body})
