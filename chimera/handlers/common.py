"""Small pieces every execution-side handler (S4, S5, S6) needs, written once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from chimera.schemas.strategy import decode_kill_switch
from chimera.streams import keys
from chimera.venues.binance.adapter import venue_from_settings
from chimera.workers.handler import Context

EVENTS = "strategy_events"


def dec(x: Any) -> Decimal | None:
    """A stored money/quantity field (a string, or empty/None for "not set") as a Decimal."""
    return None if x is None or x == "" else Decimal(str(x))


def venue(ctx: Context):
    """The worker's venue client, built once per worker and kept in the context's services."""
    v = ctx.services.get("venue")
    if v is None:
        v = ctx.services["venue"] = venue_from_settings(ctx.settings)
    return v


def kill_mode(ctx: Context) -> str | None:
    """The kill switch's mode (HALT_NEW, REDUCE_ONLY, FLATTEN, ...) or None when it is off."""
    if ctx.redis is None:
        return None
    state = decode_kill_switch(ctx.redis.get(keys.KILL_SWITCH))
    return state.mode if state else None


def strategy_event(ctx: Context, kind: str, key: str, body: dict) -> None:
    """``strategy_events/<kind>:<key>``: an upsert, so a redelivery writes the same document."""
    ctx.store.upsert(EVENTS, f"{kind}:{key}", {"kind": kind, "ts": ctx.now_ms(), **body})
