"""S3 documents and Redis values: the kill switch, the recorded decision, position records.

These are not stream messages (S3 publishes the shared ``Decision``, ``SubmitOrder`` and
``Alert`` from ``messages.py``); they fix the shape of what S3 writes so S5, S6 and the gateway
read the same thing. Same evolution rules as messages: new fields get defaults.
"""

from __future__ import annotations

from typing import Literal

import msgspec

KillMode = Literal["HALT_NEW", "REDUCE_ONLY", "FLATTEN"]
KILL_MODES: tuple[str, ...] = ("HALT_NEW", "REDUCE_ONLY", "FLATTEN")


class KillSwitchState(msgspec.Struct, frozen=True, kw_only=True):
    """JSON value of ``prod:{kill_switch}``; its expiry is the Redis key TTL."""

    mode: KillMode
    set_by: str
    reason: str = ""
    set_at: int = 0


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``signals.decision``: everything needed to explain (and replay) one decision."""

    action: Literal["open", "skip"]
    side: Literal["BUY", "SELL"] | None = None
    size_mult: float = 1.0
    tp_mult: float = 1.0
    sl_mult: float = 1.0
    reason: str = ""  # the blocking guard's name for a skip, "ok" for an open
    model_p: float | None = None
    model_status: str = "none"  # none | ok | timeout | error
    config_rev: int = 0
    bundle_id: str = ""
    as_of: int = 0
    health: str = ""
    regime: str = ""
    fired: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    market: str = ""
    price: str | None = None  # Decimal as string
    price_source: str = ""
    qty: str | None = None
    margin_usdt: str | None = None
    intent_id: str = ""
    pos_id: str = ""
    replaces: str = ""  # pos_id of a same-direction position a priority replace supersedes


class RegimeState(msgspec.Struct, frozen=True, kw_only=True):
    """JSON value of ``prod:{regime}:market:state`` (S2's daily regime); the key expires at
    ``expires_at`` so a dead scheduler shows as "no regime", never as a stale one. ``rev`` is given
    by the risk port when it writes the state (one increment per write)."""

    regime: str  # FROZEN | NORMAL | EXTREME
    rev: int = 0
    pct: float | None = None
    rv: float | None = None
    symbol: str = ""
    as_of: int = 0
    expires_at: int = 0
    history_days: int = 0
    reason: str = ""
    computed_at: int = 0


def decode_kill_switch(raw: bytes | str | None) -> KillSwitchState | None:
    if not raw:
        return None
    return msgspec.json.decode(raw, type=KillSwitchState)
