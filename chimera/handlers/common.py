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
    """The account's venue client (``ctx.venues``: built once per worker). An account without an
    enabled client raises ``UnknownAccount`` (permanent): never another account's client instead."""
    return ctx.venues.get(account_id)


def kill_mode(ctx: Context, account_id: str = "main") -> str | None:
    """The mode (HALT_NEW, REDUCE_ONLY, FLATTEN) of the switch binding ``account_id`` (the stricter of
    the global one and the account's own), or None when neither is up."""
    state = ctx.risk.effective_kill_switch(account_id)
    return state.mode if state else None


def account_of(env, named: str = "") -> str:
    """The account a command acts on: what its payload names (``named``) and its envelope must agree.

    ``named`` "" means the payload leaves it to the envelope. A payload naming another account than a
    non-default envelope is a producer's bug: refused (dead letter with the reason), never guessed.
    """
    from chimera.errors import PermanentError

    tagged = getattr(env, "account_id", "") or "main"
    if not named:
        return tagged
    if tagged != named and tagged != "main":
        raise PermanentError(f"account mismatch: the message names {named!r}, its envelope {tagged!r}")
    return named


def strategy_event(ctx: Context, kind: str, key: str, body: dict) -> None:
    """``strategy_events/<kind>:<key>``: an upsert, so a redelivery writes the same document."""
    ctx.store.upsert(EVENTS, f"{kind}:{key}", {"kind": kind, "ts": ctx.now_ms(), **body})
